"""Which machine and libraries made a number: the CPU as its code paths see it, the GPU, the library versions.

Two records use it. A CTranslate2 tuning record (:mod:`pipeline.evaluate.ct2_tuning`) and the bench programs'
results hold for one CPU (:func:`machine`); the encoder memo (:mod:`pipeline.core.encoder_memo`) keeps floats
that the CPU's SIMD paths, the GPU and the torch, transformers and numpy versions decide
(:func:`compute_identity`). A cloud CPU's name can be as vague as "AMD EPYC" for both an AVX2-only Zen 1 and
an AVX-512 Zen 4 (both seen on this project's 2-core machines), so the CPU is its name, family/model/stepping
and SIMD flags, not its name alone.
"""

from __future__ import annotations

import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# CPU feature flags that choose a code path (CTranslate2's ISA dispatch, oneDNN's, MKL's and numpy's kernels).
SIMD_FLAG = re.compile(r"(sse4_[12]|ssse3|avx\w*|fma|f16c|amx\w*|\w*vnni\w*|bf16)")


def cpu_identity(cpuinfo: str) -> dict:
    """The CPU of a ``/proc/cpuinfo`` text: model name, family/model/stepping and its SIMD flags."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    flags = sorted(f for f in fields.get("flags", "").split() if SIMD_FLAG.fullmatch(f))
    return {
        "cpu": fields.get("model name", platform.processor() or platform.machine()),
        "cpu_id": "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "isa": flags,
    }


def this_cpu() -> dict:
    """:func:`cpu_identity` of this machine (name and machine type only where there is no ``/proc/cpuinfo``)."""
    return cpu_identity(CPUINFO.read_text(errors="replace") if CPUINFO.is_file() else "")


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine() -> dict:
    """What a CPU timing or CTranslate2 tuning record is valid for: the CPU, its cores, CTranslate2's version.

    The version is read from the package metadata, not ``import ctranslate2``: importing it would fix its CPU
    setting for this process before a tuning record could choose it."""
    return {**this_cpu(), "cores": os.cpu_count(), "ctranslate2": _version("ctranslate2")}


def compute_identity(device) -> dict:
    """What decides an encoder's floats besides its weights and inputs, for a model on ``device`` (a torch device).

    Always the CPU (numpy computes the log-mel features, with SIMD paths of its own) and the torch, transformers
    and numpy versions, and torch's float32 matmul precision; on a GPU also its name, the CUDA and cuDNN versions
    and whether TF32 may stand in for float32. The thread count is left out: the encoder gave bitwise the same
    outputs on 1 and 2 threads here."""
    import numpy as np
    import torch

    ident = {
        **this_cpu(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "numpy": np.__version__,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if torch.device(device).type == "cuda":
        ident |= {
            "gpu": torch.cuda.get_device_name(device),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        }
    return ident
