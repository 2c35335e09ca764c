"""Opening a bundle safely: manifest, file hashes, and ONNX external-data locations.

External-data locations are read straight from the ONNX protobuf (no ``onnx`` import at
runtime) so that a bundle cannot make ONNX Runtime read a file outside its own directory.
Every place onnx.proto3 lets a TensorProto sit is walked: the main graph, subgraphs of
If/Loop/Scan at any depth, model-local functions and their attribute defaults, and
training graphs.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelFilesError
from .manifest import MODEL_NAME, TOKENIZER_NAME, Manifest

__all__ = ["Bundle", "external_data_locations", "proto_fields"]

# Which field of which ONNX message holds which message (field numbers of onnx/onnx.proto3), enough
# to reach every TensorProto a model can carry. Fields not listed (types, value infos, names,
# metadata) hold no tensors.
_HOLDS: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training_info", 25: "function"},
    "training_info": {1: "graph", 2: "graph"},  # initialization, algorithm
    "graph": {1: "node", 5: "tensor", 15: "sparse_tensor"},  # node, initializer, sparse_initializer
    "function": {7: "node", 11: "attribute"},  # node, attribute_proto (attribute defaults)
    "node": {5: "attribute"},
    # t, g, tensors, graphs, sparse_tensor, sparse_tensors
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse_tensor", 23: "sparse_tensor"},
    "sparse_tensor": {1: "tensor", 2: "tensor"},  # values, indices
    "tensor": {13: "entry"},  # external_data: StringStringEntryProto
}
_NODE_OP_TYPE = 4
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
# ONNX Runtime reads this location as "the offset is a memory address in this process"
_ORT_MEMORY_ADDRESS = "_ORT_MEM_ADDR_"
# A node that makes an execution provider load a pre-compiled engine, possibly from a file path
_EP_CONTEXT = "EPContext"


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ModelFilesError("model.onnx is truncated or not an ONNX file")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def proto_fields(buf: memoryview) -> Iterator[tuple[int, memoryview | None]]:
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


@dataclass
class _Scan:
    locations: set[str]  # every external-data location named anywhere in the model
    op_types: set[str]  # every node's op_type, in every graph and function


def _scan(view: memoryview) -> _Scan:
    """Walk every message that can hold a tensor, iteratively (nesting depth cannot exhaust the stack)."""
    scan = _Scan(set(), set())
    stack: list[tuple[str, memoryview]] = [("model", view)]
    while stack:
        kind, buf = stack.pop()
        if kind == "entry":
            entry = {n: bytes(p).decode("utf-8", "replace") for n, p in proto_fields(buf) if p is not None}
            if entry.get(_ENTRY_KEY) == "location":
                scan.locations.add(entry.get(_ENTRY_VALUE, ""))
            continue
        holds = _HOLDS[kind]
        for number, payload in proto_fields(buf):
            if payload is None:
                continue
            if kind == "node" and number == _NODE_OP_TYPE:
                scan.op_types.add(bytes(payload).decode("utf-8", "replace"))
            elif number in holds:
                stack.append((holds[number], payload))
    return scan


def _scan_file(model_path: str | os.PathLike[str]) -> _Scan:
    with open(model_path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ModelFilesError(f"{model_path} is empty")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _scan(memoryview(mm))
    finally:
        try:
            mm.close()
        except BufferError:  # a slice outlived the parse (e.g. in an exception's traceback); GC closes it
            pass


def external_data_locations(model_path: str | os.PathLike[str]) -> set[str]:
    """Every external-data ``location`` an ONNX model file names, in any graph or function."""
    return _scan_file(model_path).locations


class Bundle:
    """A verified bundle directory: its manifest and the paths of its files."""

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.path = Path(path)
        self.manifest = Manifest.load(self.path)
        if verify:
            self.manifest.verify_files(self.path)
        self.model_path = self.path / MODEL_NAME
        self.tokenizer_path = self.path / TOKENIZER_NAME
        scan = _scan_file(self.model_path)
        if _EP_CONTEXT in scan.op_types:
            raise ModelFilesError(
                "model.onnx holds an EPContext node (a pre-compiled engine, possibly read from a file path); "
                "bundles carry plain graphs: refused"
            )
        root = self.path.resolve()
        for location in sorted(scan.locations):
            if _ORT_MEMORY_ADDRESS in location:
                raise ModelFilesError(
                    f"model.onnx names external data {location!r}, ONNX Runtime's in-memory marker; refused"
                )
            target = (root / location).resolve()
            if os.path.isabs(location) or not target.is_relative_to(root):
                raise ModelFilesError(
                    f"model.onnx names external data {location!r} outside the bundle directory; refused"
                )
            if location not in self.manifest.files:
                raise ModelFilesError(f"model.onnx names external data {location!r} that the manifest does not list")
