"""What machine a measurement ran on, for the benchmarks' result files."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_tag(cpu: bool) -> tuple[str, str]:
    """(a short tag for file names, a readable device name): the first GPU unless ``cpu``, else the CPU."""
    import torch

    if torch.cuda.is_available() and not cpu:
        name = torch.cuda.get_device_name(0)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-").removeprefix("nvidia-")
        return (slug.split("-")[0] or "gpu"), name
    return "cpu", f"{cpu_name()}, {os.cpu_count()} cores"


def native_cpu_bf16() -> bool:
    """The CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles): there bf16 autocast is faster than fp32
    (inference about 2x, training 1.3-1.4x on MiniLM). Elsewhere torch emulates bf16, which is slower than fp32."""
    import torch

    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
