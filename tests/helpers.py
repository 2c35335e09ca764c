"""Test and benchmark helpers: the project's corpus, and random checkpoints in the exact file
layout of BAAI's releases (tiny for tests; full-size for benchmarks via scripts/random_checkpoint.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "benchmarks" / "corpus.jsonl"


def corpus_texts(n: int | None = None) -> list[str]:
    with CORPUS.open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return texts[:n] if n else texts


@dataclass(frozen=True)
class Size:
    hidden: int
    layers: int
    heads: int
    intermediate: int


TINY = Size(hidden=32, layers=2, heads=4, intermediate=64)
BGE_SMALL = Size(hidden=384, layers=12, heads=12, intermediate=1536)  # BAAI/bge-small-en-v1.5
BGE_M3 = Size(hidden=1024, layers=24, heads=16, intermediate=4096)  # BAAI/bge-m3


def save_bert_checkpoint(path: Path, *, vocab_from: Path, seed: int, st_files: bool, size: Size = TINY) -> Path:
    """A random BERT in the exact file layout of BAAI/bge-*-v1.5 (CLS pooling, normalised)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    tok = BertTokenizerFast(vocab_file=str(vocab_from / "vocab.txt"), do_lower_case=True, model_max_length=512)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.intermediate,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))  # tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.txt
    if st_files:
        (path / "1_Pooling").mkdir(exist_ok=True)
        (path / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": size.hidden,
                    "pooling_mode_cls_token": True,
                    "pooling_mode_mean_tokens": False,
                }
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


def xlmr_tokenizer(path: Path, *, max_length: int):
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


def xlmr_config(vocab_size: int, *, size: Size = TINY, max_positions: int = 514, **kw: object):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.intermediate,
        max_position_embeddings=max_positions,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        **kw,
    )


def save_m3_checkpoint(
    path: Path, *, seed: int, size: Size = TINY, vocab_size: int | None = None, max_length: int = 512
) -> Path:
    """A random model in BAAI/bge-m3's layout: XLM-R encoder plus colbert_linear.pt and sparse_linear.pt.
    ``vocab_size`` may exceed the tokenizer's (bge-m3: 250002), as a real embedding table does."""
    import torch
    from transformers import XLMRobertaModel

    tok = xlmr_tokenizer(path, max_length=max_length)
    torch.manual_seed(seed)
    config = xlmr_config(max(vocab_size or 0, len(tok)), size=size, max_positions=max_length + 2)
    XLMRobertaModel(config).eval().save_pretrained(str(path), safe_serialization=True)
    torch.save(torch.nn.Linear(size.hidden, size.hidden).state_dict(), path / "colbert_linear.pt")
    sparse = torch.nn.Linear(size.hidden, 1)
    torch.nn.init.normal_(sparse.weight, std=0.5 if size == TINY else 0.05)
    torch.save(sparse.state_dict(), path / "sparse_linear.pt")
    return path
