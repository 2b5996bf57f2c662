"""Training precision follows the hardware, and the manifest names the machine class.

``auto`` is bf16-mixed only where bf16 is computed natively (AMX or AVX-512 BF16, or a GPU
that supports it) and fp32 elsewhere, an ISA cap included; driven here with fake CPU flags."""
from __future__ import annotations

import pytest

from bench.run import precision
from tracking import machine

AVX2 = {"sse4_2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw"}


@pytest.mark.parametrize("flags, env, want", [
    (AVX2, {}, precision.FP32),                                            # emulated bf16: 14x slower
    (AVX512, {}, precision.FP32),                                          # AVX-512 without BF16
    (AVX512 | {"avx512_bf16"}, {}, precision.BF16),
    (AVX512 | {"amx_tile", "amx_bf16"}, {}, precision.BF16),
    (AVX512 | {"avx512_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, precision.FP32),   # --deterministic's cap
    (AVX512 | {"amx_bf16"}, {"ONEDNN_MAX_CPU_ISA": "avx512_core_vnni"}, precision.FP32),
    (AVX512 | {"amx_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, precision.BF16),
])
def test_auto_takes_bf16_only_where_it_is_native(flags, env, want):
    used, why = precision.resolve("auto", "cpu", flags=flags, env=env)
    assert used == want and why.startswith("auto")


def test_an_explicit_precision_is_kept_and_gpus_ask_cuda():
    assert precision.resolve("32-true", "cpu", flags=AVX512 | {"amx_bf16"})[0] == "32-true"
    assert precision.resolve("bf16-mixed", "cpu", flags=AVX2)[0] == "bf16-mixed"
    assert precision.resolve("auto", "gpu", cuda_bf16=True)[0] == precision.BF16
    assert precision.resolve("auto", "gpu", cuda_bf16=False)[0] == precision.FP32


def test_machine_class_reads_model_and_kernel_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
                    "model name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                    "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_tile amx_bf16\n\n"
                    "processor\t: 1\nmodel name\t: ignored\n\n")
    m = machine.machine_class(info)
    assert m["cpu_model"] == "Intel(R) Xeon(R) Platinum 8480+ (family 6, model 143)"
    assert m["kernel_flags"] == ["avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_tile", "amx_bf16"]
    assert m["native_bf16"] is True and {"onednn", "blas", "threads"} <= set(m)
    line = machine.class_line(m)
    assert line.startswith("Intel(R) Xeon(R) Platinum 8480+ (family 6, model 143), amx_bf16+avx512_bf16")
    assert machine.cpu_flags(tmp_path / "absent") == set()
