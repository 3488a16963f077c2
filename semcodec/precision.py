"""Whether bfloat16 autocast pays on a device.

On a CPU without native bfloat16 instructions (AVX512-BF16 or AMX on x86, the BF16 extension on
Arm) PyTorch emulates bfloat16 matmuls, and they run about 3x slower than float32: autocast is a
loss there. ``SEMCODEC_BF16=1`` / ``=0`` overrides the detection (the token search's choices
depend on the precision it decodes in, so the override also makes streams repeatable across
machines).
"""
from __future__ import annotations

import functools
import os

import torch

_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.lru_cache(maxsize=None)
def _cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    try:
        with open(cpuinfo) as f:
            for line in f:
                key = line.partition(":")[0].strip().lower()
                if key in ("flags", "features"):
                    return bool(set(line.partition(":")[2].split()) & set(_CPU_FLAGS))
    except OSError:
        pass
    return False                         # unknown: float32 is never the slow choice


def fast_bf16(device: str | torch.device) -> bool:
    """True where bfloat16 autocast on ``device`` runs faster than float32 (native bfloat16)."""
    env = os.environ.get("SEMCODEC_BF16")
    if env in ("0", "1"):
        return env == "1"
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return _cpu_has_bf16()
    return False


def slow_bf16_warning(device: str | torch.device) -> str | None:
    """A one-line notice when bfloat16 autocast was asked for where it is emulated, else None."""
    if fast_bf16(device):
        return None
    return (f"warning: --bf16 on {torch.device(device).type}: this machine has no native bfloat16, "
            "so autocast runs slower than float32 here")
