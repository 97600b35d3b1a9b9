"""A minimal CTranslate2 model.bin writer for tests: crafts files the reader must accept or refuse."""

from __future__ import annotations

import struct
from pathlib import Path

from pipeline.models.ct2_format import CT2_DTYPES, CT2Checkpoint


def _string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def serialize(ckpt: CT2Checkpoint, *, spec_name: str | None = None, dtype_ids: dict[str, int] | None = None) -> bytes:
    out = [struct.pack("<I", ckpt.binary_version), _string(spec_name or ckpt.spec_name)]
    out.append(struct.pack("<II", ckpt.spec_revision, len(ckpt.variables)))
    for name, array in ckpt.variables.items():
        out.append(_string(name) + struct.pack("<B", array.ndim))
        out.extend(struct.pack("<I", d) for d in array.shape)
        type_id = (dtype_ids or {}).get(name, CT2_DTYPES.index(ckpt.dtypes[name]))
        out.append(struct.pack("<BI", type_id, array.nbytes) + array.tobytes())
    out.append(struct.pack("<I", len(ckpt.aliases)))
    out.extend(_string(a) + _string(t) for a, t in ckpt.aliases.items())
    return b"".join(out)


def write_model_dir(src_dir: Path, out: Path, data: bytes, parts: int = 1) -> Path:
    """A CT2 folder with ``data`` as model.bin (or ``parts`` pieces) and src_dir's other files."""
    out.mkdir(parents=True)
    for f in src_dir.iterdir():
        if f.name != "model.bin":
            (out / f.name).write_bytes(f.read_bytes())
    if parts == 1:
        (out / "model.bin").write_bytes(data)
    else:
        step = len(data) // parts + 1
        for i in range(parts):
            (out / f"model.bin.part{i + 1}").write_bytes(data[i * step : (i + 1) * step])
    return out
