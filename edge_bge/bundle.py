"""Opening a bundle safely: manifest, file hashes, and ONNX external-data locations.

External-data locations are read straight from the ONNX protobuf (no ``onnx`` import at
runtime) so that a bundle cannot make ONNX Runtime read a file outside its own directory.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ModelFilesError
from .manifest import MODEL_NAME, TOKENIZER_NAME, Manifest

__all__ = ["Bundle", "external_data_locations"]

# ONNX protobuf field numbers (onnx/onnx.proto3)
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INIT = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelFilesError("model.onnx is truncated or not an ONNX file")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, payload) of each field; payload only for length-delimited fields."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            yield number, None
        elif wire == 1:
            pos += 8
            yield number, None
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ModelFilesError("model.onnx is truncated or not an ONNX file")
            yield number, buf[pos : pos + size]
            pos += size
        elif wire == 5:
            pos += 4
            yield number, None
        else:
            raise ModelFilesError(f"model.onnx is not an ONNX file (wire type {wire})")


def _tensor_locations(tensor: memoryview) -> Iterator[str]:
    for number, payload in _fields(tensor):
        if number == _TENSOR_EXTERNAL_DATA and payload is not None:
            entry = {n: bytes(p).decode("utf-8", "replace") for n, p in _fields(payload) if p is not None}
            if entry.get(_ENTRY_KEY) == "location":
                yield entry.get(_ENTRY_VALUE, "")


def _sparse_locations(sparse: memoryview) -> Iterator[str]:
    for number, payload in _fields(sparse):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and payload is not None:
            yield from _tensor_locations(payload)


def _graph_locations(graph: memoryview) -> Iterator[str]:
    for number, payload in _fields(graph):
        if payload is None:
            continue
        if number == _GRAPH_INITIALIZER:
            yield from _tensor_locations(payload)
        elif number == _GRAPH_SPARSE_INIT:
            yield from _sparse_locations(payload)
        elif number == _GRAPH_NODE:
            for n, attr in _fields(payload):
                if n != _NODE_ATTRIBUTE or attr is None:
                    continue
                for a, value in _fields(attr):
                    if value is None:
                        continue
                    if a in (_ATTR_T, _ATTR_TENSORS):
                        yield from _tensor_locations(value)
                    elif a in (_ATTR_G, _ATTR_GRAPHS):
                        yield from _graph_locations(value)
                    elif a in (_ATTR_SPARSE, _ATTR_SPARSES):
                        yield from _sparse_locations(value)


def _model_locations(view: memoryview) -> set[str]:
    found: set[str] = set()
    for number, payload in _fields(view):
        if number == _MODEL_GRAPH and payload is not None:
            found.update(_graph_locations(payload))
    return found


def external_data_locations(model_path: str | os.PathLike[str]) -> set[str]:
    """Every external-data ``location`` an ONNX model file names."""
    with open(model_path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ModelFilesError(f"{model_path} is empty")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _model_locations(memoryview(mm))
    finally:
        try:
            mm.close()
        except BufferError:  # a slice outlived the parse (e.g. in an exception's traceback); GC closes it
            pass


class Bundle:
    """A verified bundle directory: its manifest and the paths of its files."""

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.path = Path(path)
        self.manifest = Manifest.load(self.path)
        if verify:
            self.manifest.verify_files(self.path)
        self.model_path = self.path / MODEL_NAME
        self.tokenizer_path = self.path / TOKENIZER_NAME
        root = self.path.resolve()
        for location in external_data_locations(self.model_path):
            target = (root / location).resolve()
            if os.path.isabs(location) or not target.is_relative_to(root):
                raise ModelFilesError(
                    f"model.onnx names external data {location!r} outside the bundle directory; refused"
                )
            if location not in self.manifest.files:
                raise ModelFilesError(f"model.onnx names external data {location!r} that the manifest does not list")
