"""The fixed probe set every export is verified on: short queries to texts past max_length,
accents, CJK, emoji, code, and the empty string."""

from __future__ import annotations

import json

from .errors import ExportError

_BASE = [
    "",
    "hi",
    "What is BGE?",
    "how to bake sourdough bread",
    "capital of France",
    "symptoms of vitamin D deficiency",
    "best hiking trails near Zürich",
    "python sort list of dicts by key",
    "Why is the sky blue?",
    "cheap flights to Tokyo in April",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "Ein Mann isst eine Mahlzeit am Küchentisch.",
    "Le café est fermé le dimanche, mais la boulangerie reste ouverte.",
    "¿Dónde está la estación de tren más cercana?",
    "Ça a été une année très chargée pour l'équipe de recherche.",
    "Åsa och Øyvind åkte skidor i Östersund förra vintern.",
    "naïve façade résumé coöperate jalapeño",
    "Привет, как дела? Это тестовое предложение.",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    "مرحبا بالعالم، هذه جملة للاختبار.",
    "שלום עולם, זה משפט לבדיקה.",
    "नमस्ते दुनिया, यह एक परीक्षण वाक्य है।",
    "今天天气很好，我们去公园散步吧。",
    "为这个句子生成表示以用于检索相关文章：如何学习机器学习？",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "東京は日本の首都であり、世界最大級の都市圏を持つ。",
    "すみません、駅はどこですか？",
    "서울은 대한민국의 수도입니다.",
    "ภาษาไทยเป็นภาษาราชการของประเทศไทย",
    "Tiếng Việt có sáu thanh điệu khác nhau.",
    "I love this! 😍🔥🎉",
    "🚀🚀🚀 to the moon 🌕",
    "Family: 👨‍👩‍👧‍👦, flags: 🇫🇷🇯🇵, skin tones: 👍🏽",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "https://example.com/path?query=1&other=two#fragment",
    "E = mc², ∑ᵢ xᵢ² ≥ 0, ∀ε>0 ∃δ>0",
    "Tab\tseparated\tvalues\nand a second line",
    "    leading and trailing spaces    ",
    "UPPERCASE TEXT SHOULD BE HANDLED THE SAME WAY AS LOWERCASE",
    "a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a",
    "1234567890 3.14159 2.71828 6.02214076e23",
    "Mixed 中文 and English in one sentence, with émojis 🙂.",
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War in Europe.",
    "Transformers use self-attention to weigh the importance of each token in a sequence.",
    "A retrieval system ranks passages by the similarity of their embeddings to the query embedding.",
    "The patient was advised to rest, drink fluids and return if the fever persisted beyond three days.",
    "Quarterly revenue rose 12% year over year, driven by subscription growth in Asia-Pacific.",
    "Rust's borrow checker enforces at compile time that references never outlive the data they point to.",
    "In 1969, Apollo 11 landed the first humans on the Moon; Neil Armstrong stepped out first.",
]

# the short probe texts: the query side of reranker probe pairs
QUERIES = [t for t in _BASE if 0 < len(t) < 60]

_PARAGRAPH = (
    "Embedding models map text to dense vectors so that semantically similar passages lie close "
    "together. Search systems compare a query vector with millions of passage vectors, and the "
    "quality of the ranking depends on how faithfully the deployed model reproduces the reference. "
    "Zürich, São Paulo, 北京 and 東京 appear here so that long inputs also cover accents and CJK. 🚀 "
)


def _calibration_texts() -> list[str]:
    from .recipes import data_file

    path = data_file("calibration", "en.jsonl")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ExportError(f"the calibration texts {path} are missing: reinstall edge-bge-export") from None
    return [json.loads(line)["text"] for line in lines if line.strip()]


# Past this many tokens a probe only re-checks truncation and far positions, which the first long
# probe does at the real max_length; the others stay this long (bge-m3's 8192-token probes
# cost ~2 minutes each in the PyTorch reference on 2 cores).
LONG_PROBE_TOKENS = 512


def probe_texts(max_length: int) -> list[str]:
    """At least 64 texts; the last ten are longer than ``min(max_length, 512)`` tokens, and the
    first of those longer than ``max_length``."""
    longs = []
    for k in range(10):
        # ~4 characters per token for English: 1.5x the limit in characters is safely past it
        limit = max_length if k == 0 else min(max_length, LONG_PROBE_TOKENS)
        chars = max(600, int(limit * 6)) + 97 * k
        text = (_PARAGRAPH * (chars // len(_PARAGRAPH) + 1))[:chars]
        longs.append(f"Document {k}. {text}")
    return _BASE + longs


def calibration_texts(max_length: int) -> list[str]:
    """Probe texts plus the calibration set shipped in edge_bge_export/data/calibration/: for int8 searches."""
    return probe_texts(max_length) + _calibration_texts()
