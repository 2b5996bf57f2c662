"""Fail fast: every bad input is one line naming the knob, exit code 2, no traceback, and no
work done first (no training, no data read, no store touched)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import presets
from bench.run import preflight, runner
from bench.__main__ import main as cli

REPO = Path(__file__).resolve().parents[1]


def one_error_line(capsys, words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, f"not one error line:\n{err}"
    assert words in err and "Traceback" not in err, err
    return err


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """A run that gets past the checks trains nothing: any group it starts is an error."""
    def must_not_start(*a, **k):
        raise AssertionError("work started before the bad input was refused")
    monkeypatch.setattr(runner, "_run_seed", must_not_start)
    monkeypatch.setattr(runner, "_experiment", must_not_start)   # the store is not touched either
    monkeypatch.setenv("ANNSNN_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


BASE = ["run", "--preset", "smoke", "--set", "deterministic=false", "--no-progress"]


@pytest.mark.parametrize("sets, words", [
    (["robustness.eps=[-8]"], "every value of 'robustness.eps' must be in [0, 255], got -8"),
    (["train.epochs=-1"], "'train.epochs' must be >= 1, got -1"),
    (["train.epochs=0"], "'train.epochs' must be >= 1, got 0"),
    (["train.lr=-0.1"], "'train.lr' must be > 0, got -0.1"),
    (["test_subset=0"], "'test_subset' must be >= 1, got 0"),
    (["val_subset=0"], "'val_subset' must be >= 1, got 0"),
    (["robustness.noise_images=0"], "'robustness.noise_images' must be >= 1, got 0"),
    (["T_max=2", "summary_t=[1, 64]"], "summary_t [1, 64] asks for t = 64 beyond T_max = 2"),
])
def test_a_knob_out_of_range_is_one_line(capsys, no_work, sets, words):
    assert cli(BASE + [a for s in sets for a in ("--set", s)]) == 2
    one_error_line(capsys, words)


def test_seeds_that_are_not_integers_are_one_line(capsys, no_work):
    assert cli(BASE + ["--seeds", "0,,a"]) == 2
    one_error_line(capsys, "--seeds expects non-negative integers separated by commas, like 0,1,2; got '0,,a'")


@pytest.mark.parametrize("text, words", [
    ("T_max: 4\nmethods: [steprelu\n", "cannot read preset bad.yaml, line 3, column 1"),
    ("T_max: 4\nmethods: [steprelu]\nT_max: 8\n", "key 'T_max' given twice (first at line 1)"),
])
def test_a_broken_preset_file_is_one_line(tmp_path, capsys, no_work, text, words):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert cli(["run", "--preset", str(bad)]) == 2
    one_error_line(capsys, words)


def test_an_output_folder_that_cannot_be_written_is_one_line(capsys, no_work):
    (no_work / "a-file").write_text("x")
    assert cli(BASE + ["--out", str(no_work / "a-file" / "out")]) == 2
    one_error_line(capsys, f"output folder (--out) {no_work / 'a-file' / 'out'} is not writable")


@pytest.mark.parametrize("uri, words", [
    ("sqllite:///x.db", "unknown scheme sqllite:; valid: sqlite:"),
    ("mlflow.db", "unknown scheme (none)"),
])
def test_a_tracking_uri_typo_is_one_line(capsys, no_work, uri, words):
    assert cli(BASE + ["--tracking-uri", uri]) == 2
    one_error_line(capsys, words)


def test_an_unreachable_tracking_server_is_one_line_within_seconds(capsys, no_work):
    t0 = time.time()
    assert cli(BASE + ["--tracking-uri", "http://127.0.0.1:9"]) == 2
    one_error_line(capsys, "tracking server http://127.0.0.1:9 does not answer")
    assert time.time() - t0 < 60     # not the 515 s of MLflow's retries (generous: a loaded CI machine)


def test_a_store_that_cannot_be_written_is_one_line(capsys, no_work):
    (no_work / "a-file").write_text("x")
    uri = f"sqlite:///{no_work / 'a-file' / 'mlflow.db'}"
    assert cli(BASE + ["--tracking-uri", uri]) == 2
    one_error_line(capsys, "tracking store folder")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_missing_gpu_is_one_line(capsys, no_work):
    assert cli(BASE + ["--set", "trainer.accelerator=gpu"]) == 2
    one_error_line(capsys, "trainer.accelerator=gpu, but this machine has no CUDA GPU")


def test_resume_with_a_truncated_checkpoint_names_the_file(capsys, no_work):
    cfg = presets.load("smoke")
    ckpt = runner.checkpoint_path("smoke", cfg["seeds"][0], "relu")
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:200])          # truncated, as a killed copy leaves it
    assert cli(BASE + ["--resume"]) == 2
    one_error_line(capsys, f"--resume: checkpoint {ckpt} cannot be read")


def test_ctrl_c_is_one_line_and_code_130(capsys, monkeypatch, no_work):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "run", interrupted)
    assert cli(BASE) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted; rerun with --resume" in err and "Traceback" not in err


def test_a_non_finite_calibration_image_is_refused_before_training():
    class DM:
        calib_indices = torch.tensor([7, 3, 9])

        def calib_dataloader(self):
            x = torch.zeros(3, 1, 4, 4)
            x[2, 0, 1, 1] = float("nan")
            return [(x[:2], None), (x[2:], None)]
    with pytest.raises(runner.BadCalibration, match=r"calibration image 2 \(training index 9\)"):
        runner.check_calibration(DM())


def test_an_empty_data_dir_is_refused_not_skipped(tmp_path):
    from lightning_modules import data_sources
    from lightning_modules.data_dir import DataUnavailableError
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataUnavailableError, match="no fashion-mnist in a known layout") as e:
        data_sources.find("fashion-mnist", tmp_path / "empty")
    assert "data_dir" in e.value.one_line()


def test_preflight_passes_a_good_setup(tmp_path):
    preflight.run({"trainer": {"accelerator": "cpu"}}, tmp_path / "out", f"sqlite:///{tmp_path}/m.db", [])


def test_help_list_and_an_argument_error_load_no_torch():
    """The imports are paid only when needed (timed in bench/perf, not asserted here)."""
    code = ("import sys, runpy\nsys.argv=['bench'] + sys.argv[1:]\n"
            "from bench.__main__ import main\nrc = main(sys.argv[1:])\n"
            "heavy = [m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    for args in (["list"], ["run", "--preset", "smoke", "--set", "train.epochs=0"],
                 ["run", "--preset", "smoke", "--seeds", "0,,a"]):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
        assert "HEAVY []" in out.stdout, (args, out.stdout[-500:], out.stderr[-800:])


@pytest.mark.parametrize("args, code, words", [
    (["export", "--help"], 0, ""),
    (["interop", "--help"], 0, ""),
    (["export", "--preset", "smoke", "--method", "maxnorm"], 2, "the following arguments are required: --out"),
    (["export", "--preset", "nope", "--method", "maxnorm", "--out", "x.nir"], 2, "error: unknown preset 'nope'"),
    (["export", "--preset", "smoke", "--seed", "-1", "--method", "maxnorm", "--out", "x.nir"], 2,
     "error: --seed must be >= 0, got -1"),
    (["interop", "--preset", "smoke", "--images", "0"], 2, "error: --images must be >= 1, got 0"),
    (["interop", "--preset", "smoke", "--neurobench-images", "-3"], 2,
     "error: --neurobench-images must be >= 1, got -3"),
    (["interop", "--preset", "smoke", "--seed", "x"], 2, "argument --seed: invalid int value: 'x'"),
])
def test_export_and_interop_help_and_argument_errors_load_no_torch(args, code, words):
    snippet = ("import sys\nfrom bench.__main__ import main\n"
               "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
               "heavy = [m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules]\n"
               "print('RC', rc, 'HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", snippet, *args], capture_output=True, text=True, cwd=REPO)
    assert f"RC {code} HEAVY []" in out.stdout, (args, out.stdout[-500:], out.stderr[-800:])
    assert words in out.stderr and "Traceback" not in out.stderr, out.stderr
    if words.startswith("error: "):
        assert out.stderr.count("\n") == 1, out.stderr
