"""Compact vectors: edge_bge.quantize and Embedder.embed(dtype=...) against sentence-transformers'
quantize_embeddings, and the ranges the export records in the manifest."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge_bge import Embedder, InputError, ManifestError
from edge_bge.manifest import MANIFEST_NAME, Manifest
from edge_bge.quantize import DTYPES, calibration_ranges, output_width, quantize, ranges_array
from edge_bge.tokenize import TextTokenizer
from edge_bge_export.pipeline import range_texts

from .helpers import corpus_texts

TEXTS = corpus_texts(200)


@pytest.fixture(scope="module")
def minilm(minilm_fp32) -> Embedder:
    return Embedder(minilm_fp32)


@pytest.fixture(scope="module")
def vectors(minilm) -> np.ndarray:
    return minilm.embed(TEXTS)


def st_quantize(vectors: np.ndarray, dtype: str, **kw) -> np.ndarray:
    from sentence_transformers.util.quantization import quantize_embeddings

    return quantize_embeddings(vectors, dtype, **kw)


def test_ranges_are_the_bundles_vectors_of_the_calibration_texts(minilm, minilm_fp32):
    m = Manifest.load(minilm_fp32)
    r = ranges_array(m.quantization_ranges, m.dim)
    texts = range_texts(TextTokenizer(minilm_fp32 / "tokenizer.json", max_length=m.max_length))
    assert len(texts) >= 300
    calib = minilm.embed(texts)
    np.testing.assert_allclose(r, np.vstack([calib.min(axis=0), calib.max(axis=0)]), atol=1e-6)
    assert (r[0] < r[1]).all()
    # readable: the two lists take a line each
    assert len((minilm_fp32 / MANIFEST_NAME).read_text().splitlines()) < 100


@pytest.mark.parametrize("dtype", ["int8", "uint8", "binary", "ubinary"])
def test_identical_to_sentence_transformers(minilm, minilm_fp32, vectors, dtype):
    ranges = ranges_array(Manifest.load(minilm_fp32).quantization_ranges)
    want = st_quantize(vectors, dtype, ranges=ranges)
    got = minilm.embed(TEXTS, dtype=dtype)
    assert got.dtype == want.dtype and got.shape == want.shape == (len(TEXTS), output_width(384, dtype))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(minilm.embed(TEXTS[7], dtype=dtype), want[7])
    np.testing.assert_array_equal(quantize(vectors, dtype, ranges=ranges), want)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_calibration_ranges_match_sentence_transformers_calibration(vectors, dtype):
    calib, data = vectors[:150], vectors[150:]
    want = st_quantize(data, dtype, calibration_embeddings=calib)
    got = quantize(data, dtype, ranges=calibration_ranges(calib))
    np.testing.assert_array_equal(got, want)
    # a constant dimension gets a step of 1, as sentence-transformers does
    flat = vectors.copy()
    flat[:, 5] = 0.25
    want = st_quantize(flat, dtype, calibration_embeddings=flat)
    np.testing.assert_array_equal(quantize(flat, dtype, ranges=calibration_ranges(flat)), want)


def test_float_types(minilm, vectors):
    np.testing.assert_array_equal(minilm.embed(TEXTS, dtype="float32"), vectors)
    np.testing.assert_array_equal(st_quantize(vectors, "float32"), vectors)
    half = minilm.embed(TEXTS, dtype="float16")
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, vectors.astype(np.float16))
    assert minilm.embed([], dtype="binary").shape == (0, 48)


def test_unknown_dtype_lists_the_accepted(minilm):
    with pytest.raises(InputError) as e:
        minilm.embed(TEXTS[:2], dtype="int4")
    assert all(d in str(e.value) for d in DTYPES)
    with pytest.raises(InputError, match="accepted"):
        quantize(np.zeros((1, 4), np.float32), "bf16")
    with pytest.raises(InputError, match="float vectors"):
        quantize(np.zeros((1, 4), np.int8), "binary")
    with pytest.raises(InputError, match="needs per-dimension ranges"):
        quantize(np.zeros((1, 4), np.float32), "uint8")
    with pytest.raises(InputError, match="min <= max"):
        quantize(np.zeros((1, 2), np.float32), "int8", ranges={"min": [1, 0], "max": [0, 1]})


def test_old_manifest_without_ranges_loads(tmp_path, minilm_fp32, vectors):
    old = tmp_path / "old"
    shutil.copytree(minilm_fp32, old)
    data = json.loads((old / MANIFEST_NAME).read_text())
    del data["quantization_ranges"]
    (old / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
    model = Embedder(old)
    assert model.manifest.quantization_ranges is None
    np.testing.assert_array_equal(model.embed(TEXTS[:3], dtype="ubinary"), st_quantize(vectors[:3], "ubinary"))
    for dtype in ("int8", "uint8"):
        with pytest.raises(InputError, match="has none .* re-export"):
            model.embed(TEXTS[:3], dtype=dtype)


def test_bad_ranges_refused(tmp_path, minilm_fp32):
    data = json.loads((minilm_fp32 / MANIFEST_NAME).read_text())
    good = data["quantization_ranges"]
    bad = [
        {"min": good["min"][:-1], "max": good["max"]},
        {"min": good["max"], "max": good["min"]},
        {"min": good["min"], "max": good["max"][:-1] + ["x"]},
        {"low": good["min"], "high": good["max"]},
        [good["min"], good["max"]],
    ]
    for value in bad:
        with pytest.raises(ManifestError, match="quantization_ranges"):
            Manifest.from_dict({**data, "quantization_ranges": value})
    assert Manifest.from_dict({**data, "quantization_ranges": None}).quantization_ranges is None
    short = tmp_path / "short"
    shutil.copytree(minilm_fp32, short)
    ranges = {"min": good["min"][:100], "max": good["max"][:100]}
    (short / MANIFEST_NAME).write_text(json.dumps({**data, "quantization_ranges": ranges}))
    with pytest.raises(ManifestError, match="'quantization_ranges' covers 100 dimensions; dim is 384"):
        Embedder(short)


def test_m3_has_ranges_and_rerankers_none(bundles, tiny_m3_dir, tiny_reranker_dir):
    m3 = Embedder(bundles.get(tiny_m3_dir, "fp32"))
    assert len(m3.manifest.quantization_ranges["min"]) == m3.dim
    dense = m3.encode(TEXTS[:20]).dense
    ranges = ranges_array(m3.manifest.quantization_ranges)
    np.testing.assert_array_equal(m3.embed(TEXTS[:20], dtype="int8"), st_quantize(dense, "int8", ranges=ranges))
    assert Manifest.load(bundles.get(tiny_reranker_dir, "fp32")).quantization_ranges is None
