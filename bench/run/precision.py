"""``trainer.precision: auto``: training precision that follows the hardware.

bf16-mixed trains 1.5-3x faster than fp32 where the hardware computes bf16 (AMX or AVX-512
BF16 on a CPU; a GPU that supports it), and many times slower where it is emulated (one
vgg-cpu step on an AVX2-only CPU: 444 ms in fp32 against 6382 ms in bf16-mixed). So ``auto``
takes bf16-mixed only on native bf16 and fp32 everywhere else, including a CPU whose bf16
instructions an ``ONEDNN_MAX_CPU_ISA`` cap (``--deterministic``) takes away. The simulation
always runs in fp32: exactness is defined on fp32 arithmetic.
"""
from __future__ import annotations

from tracking.machine import cpu_flags, native_bf16

AUTO = "auto"
BF16, FP32 = "bf16-mixed", "32-true"


def resolve(requested: str, accelerator: str, flags: set[str] | None = None,
            env: dict | None = None, cuda_bf16: bool | None = None) -> tuple[str, str]:
    """(Lightning precision, why). Anything but ``auto`` is taken as asked."""
    if requested != AUTO:
        return requested, "as the preset asks"
    if accelerator in ("gpu", "cuda"):
        if cuda_bf16 is None:
            import torch
            cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return (BF16, "auto: the GPU supports bf16") if cuda_bf16 else (FP32, "auto: the GPU lacks bf16")
    flags = cpu_flags() if flags is None else flags
    if native_bf16(flags, env):
        return BF16, "auto: this CPU computes bf16 natively (AMX or AVX-512 BF16)"
    why = ("an ONEDNN_MAX_CPU_ISA cap hides its bf16 instructions"
           if any(f in flags for f in ("amx_bf16", "avx512_bf16")) else "no native bf16 on this CPU")
    return FP32, f"auto: fp32 ({why}; emulated bf16 is many times slower)"
