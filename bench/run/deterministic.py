"""``--deterministic``: pin what can be pinned so two CPUs of different generations can give
the same bits, and hash what they give so anyone can check.

Where the bits come from on a CPU: oneDNN (convolutions) and MKL (matrix products) pick
kernels by instruction set, ATen's own vectorised loops by its CPU capability, and a
reduction split over threads adds in another order. The mode caps all three instruction
sets at AVX2, the level every x86-64 CPU of the last decade has, fixes the thread count,
and turns on torch's deterministic algorithms. The caps are environment variables that the
libraries read once, when torch loads, so they must be set before: the command line starts
a fresh interpreter with them when torch is already loaded in its own process.

Hashes (always recorded; comparable across machines only in this mode): SHA-256 of the
trained weights after every epoch, and of each SNN's per-image predictions.
"""
from __future__ import annotations

import os
import sys

ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2"}
THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class NotPinned(RuntimeError):
    """Deterministic mode asked for in a process whose torch loaded without the caps."""


def wanted_env(threads: int) -> dict[str, str]:
    return {**ENV, **{k: str(int(threads)) for k in THREADS_ENV}}


def env_is_set(threads: int, env=None) -> bool:
    env = os.environ if env is None else env
    return all(env.get(k) == v for k, v in wanted_env(threads).items())


def torch_loaded() -> bool:
    return "torch" in sys.modules


def apply(threads: int) -> None:
    """The in-process half (after torch loads with the caps set): deterministic algorithms
    and a fixed thread count. Refuses when the caps were not set before torch loaded."""
    if not env_is_set(threads):
        missing = {k: v for k, v in wanted_env(threads).items() if os.environ.get(k) != v}
        raise NotPinned(f"--deterministic needs {missing} set before torch loads "
                           "(python -m bench sets them itself)")
    import torch
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(int(threads))
