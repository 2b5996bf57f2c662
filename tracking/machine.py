"""The machine class a result was measured on: what changes kernels, hence last bits and speed.

Two CPUs that run the same commit can still give different numbers: oneDNN and MKL pick
kernels by instruction set (AVX2, AVX-512, AVX-512 BF16, AMX), and training amplifies
last-bit differences. A budget also holds only on the class of machine that measured it.
So every manifest names the CPU model, the instruction-set flags that change kernels, the
caps a user set on them (``ONEDNN_MAX_CPU_ISA``, ``MKL_CBWR``, ``ATEN_CPU_CAPABILITY``), torch's
oneDNN/BLAS build and the thread count. Read from /proc/cpuinfo where there is one (Linux);
elsewhere the fields say "unknown" rather than guess.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# flags (as /proc/cpuinfo spells them) that make oneDNN/MKL/ATen take other kernels
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_bf16", "amx_int8")
NATIVE_BF16 = ("amx_bf16", "avx512_bf16")     # bf16 matrix math in hardware (else emulated: slow)
ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
# ONEDNN_MAX_CPU_ISA values that leave oneDNN without bf16 instructions
NO_BF16_ISA = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def _cpuinfo(path: Path = CPUINFO) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def cpu_flags(path: Path = CPUINFO) -> set[str]:
    return set(_cpuinfo(path).get("flags", "").split())


def cpu_model(path: Path = CPUINFO) -> str:
    info = _cpuinfo(path)
    model = info.get("model name") or platform.processor() or "unknown"
    if info.get("cpu family"):
        model += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return model


def native_bf16(flags: set[str], env: dict | None = None) -> bool:
    """The CPU computes bf16 in hardware (AMX or AVX-512 BF16), and no ISA cap takes it away."""
    env = os.environ if env is None else env
    cap = str(env.get("ONEDNN_MAX_CPU_ISA", "")).upper()
    return any(f in flags for f in NATIVE_BF16) and cap not in NO_BF16_ISA


def _torch_build() -> dict:
    """torch's oneDNN and BLAS as its build reports them, and the threads it will use."""
    try:
        import torch
    except ImportError:
        return {}
    import re
    cfg = torch.__config__.show()
    onednn = re.search(r"MKL-DNN (v[\w.]+)", cfg)
    blas = re.search(r"BLAS_INFO=(\w+)", cfg)
    return {"onednn": onednn.group(1) if onednn else "unknown", "blas": blas.group(1) if blas else "unknown",
            "threads": torch.get_num_threads(),
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def machine_class(path: Path = CPUINFO) -> dict:
    """What the manifest records about the machine (see the module docstring)."""
    flags = cpu_flags(path)
    return {
        "cpu_model": cpu_model(path),
        "kernel_flags": [f for f in KERNEL_FLAGS if f in flags],
        "native_bf16": native_bf16(flags),
        "isa_caps": {k: os.environ[k] for k in ISA_ENV if k in os.environ},
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        **_torch_build(),
    }


def class_line(m: dict) -> str:
    """One line naming the class: model, the widest kernel flags, caps, threads."""
    flags = m.get("kernel_flags") or []
    widest = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags][:2]
    caps = ", ".join(f"{k}={v}" for k, v in (m.get("isa_caps") or {}).items())
    return (f"{m.get('cpu_model', 'unknown CPU')}, {'+'.join(widest) or 'no AVX2'}"
            + (f" (capped: {caps})" if caps else "")
            + f", {m.get('threads', '?')} threads of {m.get('cpus', '?')} CPUs")
