"""bench/perf/gpu_check.py where no GPU is: the no-GPU exit, the report writer, the part runner,
and the short paper run's overrides (valid preset keys, outputs kept out of results/)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from bench import presets
from bench.perf import gpu_check


def test_without_cuda_nothing_runs_and_the_exit_status_is_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    called = []
    monkeypatch.setattr(gpu_check, "run_part", lambda part, **kw: called.append(part))
    out = tmp_path / "gpu-check.md"
    assert gpu_check.main(["--out", str(out)]) == gpu_check.NO_GPU_EXIT == 2
    assert gpu_check.main(["--speed-table"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "nothing was run" in err
    assert not called and not out.exists()


def test_report_lists_every_part_with_outcome_time_and_output():
    outcomes = [gpu_check.Outcome("exactness on CUDA", "passed", 61.25, "pytest -q x", "15 passed"),
                gpu_check.Outcome("speed", "timed out after 120 s", 120.0, "python -m y", "| a | b |")]
    meta = {"commit": "`abc123`", "GPU": "NVIDIA H200 (CUDA 12.4, 1 visible)", "versions": "torch 2.5"}
    md = gpu_check.render(outcomes, meta)
    assert md.startswith("# GPU check\n")
    for line in ("- commit: `abc123`", "- GPU: NVIDIA H200 (CUDA 12.4, 1 visible)", "- versions: torch 2.5",
                 "| exactness on CUDA | passed | 61.2 |", "| speed | timed out after 120 s | 120.0 |",
                 "All parts: NOT all passed, 181 s in total.", "## exactness on CUDA", "`pytest -q x`",
                 "15 passed", "| a | b |"):
        assert line in md.splitlines(), line
    assert "All parts: passed" in gpu_check.render(outcomes[:1], meta)


def test_run_part_reports_pass_failure_and_timeout(tmp_path):
    py = sys.executable
    ok = gpu_check.run_part(gpu_check.Part("ok", [py, "-c", "print('hello'); print('world')"], 60,
                                           {"X_GPU_CHECK": "1"}), cwd=tmp_path)
    assert ok.ok and ok.status == "passed" and ok.tail == "hello\nworld"
    assert ok.command.startswith("X_GPU_CHECK=1 ") and ok.seconds > 0
    bad = gpu_check.run_part(gpu_check.Part("bad", [py, "-c", "import sys; print('x'); sys.exit(3)"], 60),
                             cwd=tmp_path)
    assert not bad.ok and bad.status == "failed (exit 3)" and bad.tail == "x"
    slow = gpu_check.run_part(gpu_check.Part("slow", [py, "-c", "import time; time.sleep(30)"], 1),
                              cwd=tmp_path)
    assert slow.status == "timed out after 1 s" and slow.seconds < 20


def test_the_parts_fit_ten_minutes_and_the_short_run_is_a_valid_preset(tmp_path):
    ps = gpu_check.parts(tmp_path, data_dir="/data", sets=("dataset=cifar10-jpeg",))
    assert sum(p.timeout_s for p in ps) <= 600
    exact, paper, speed = ps
    assert exact.env == {"ANNSNN_TEST_DEVICE": "cuda"}
    assert all((gpu_check.ROOT / a).is_file() for a in exact.argv if a.startswith("tests/"))
    sets = [paper.argv[i + 1] for i, a in enumerate(paper.argv) if a == "--set"]
    assert sets == gpu_check.PAPER_OVERRIDES + ["dataset=cifar10-jpeg"]
    assert paper.argv[paper.argv.index("--preset") + 1] == "paper-cifar10-vgg16"
    assert paper.argv[-2:] == ["--data-dir", "/data"]
    for flag in ("--out", "--tracking-uri"):           # outputs stay in the scratch folder
        assert str(tmp_path) in paper.argv[paper.argv.index(flag) + 1]
    assert Path(paper.env["ANNSNN_RUNS_DIR"]).parent == tmp_path
    cfg = presets.load("paper-cifar10-vgg16", gpu_check.PAPER_OVERRIDES)   # no unknown key
    assert cfg["trainer"]["limit_train_batches"] == gpu_check.TRAIN_STEPS and cfg["T_max"] == 16
    assert cfg["trainer"]["accelerator"] == "gpu" and not cfg["robustness"]["enabled"]
    assert speed.argv[-3:] == ["-m", "bench.perf.gpu_check", "--speed-table"]
