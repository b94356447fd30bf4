"""What the machine offers: the CPU's name and instruction sets, read once.

Matrix speed on a CPU depends on its vector units (AVX2, AVX-512, native bfloat16 in AVX512-BF16 or AMX),
so the choices that depend on them (``train.precision: auto``) and every benchmark's record of its host read
them here. Linux reports them in /proc/cpuinfo; elsewhere the flags are unknown and nothing is assumed.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

BF16_UNITS = frozenset({"avx512_bf16", "amx_bf16"})  # native bfloat16 products (else emulated)
SHOWN_UNITS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")  # the ones that decide matrix speed


@functools.cache
def _cpuinfo() -> dict[str, str]:
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in info.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of the CPU (empty where the system does not say)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_name() -> str:
    """The CPU's name and the vector units among ``SHOWN_UNITS`` it has."""
    name = _cpuinfo().get("model name") or platform.processor() or "unknown CPU"
    units = [flag for flag in SHOWN_UNITS if flag in cpu_flags()]
    return f"{name} ({', '.join(units) or 'no AVX2'})"


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 products run in hardware on ``device`` rather than emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(BF16_UNITS & cpu_flags())
