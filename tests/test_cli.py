"""First steps: missing or bad data is one line and exit code 2, `./reproduce.sh list`
lists the presets, the SLURM log folder exists before SLURM opens it, and every command in
the READMEs runs without an activated venv (or follows the documented activation line)."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lightning_modules.data_sources as S
from bench import presets
from bench.run import runner
from bench.__main__ import main as cli

REPO = Path(__file__).resolve().parents[1]


def one_error_line(capsys, words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, f"not one error line:\n{err}"
    assert words in err and "Traceback" not in err
    return err


@pytest.fixture
def no_runs(monkeypatch):
    def must_not_run(*a, **k):
        raise AssertionError("the CLI started a run it should have refused")
    monkeypatch.setattr(runner, "run", must_not_run)


# ----------------------------------------------------------------------------- missing data

@pytest.mark.parametrize("how", ["--data-dir", "--set"])
def test_a_data_dir_that_does_not_exist_is_one_line(tmp_path, capsys, no_runs, how):
    missing = tmp_path / "no-such"
    args = ["--data-dir", str(missing)] if how == "--data-dir" else ["--set", f"data_dir={missing}"]
    assert cli(["run", "--preset", "smoke", *args]) == 2
    one_error_line(capsys, f"{missing} (--data-dir / data_dir) does not exist")
    (tmp_path / "a-file").touch()
    assert cli(["run", "--preset", "smoke", "--data-dir", str(tmp_path / "a-file")]) == 2
    one_error_line(capsys, "is not a folder")


def test_a_missing_data_dir_is_one_line_from_a_shell():
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--preset", "smoke", "--data-dir",
                           "/no/such/folder"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: data folder /no/such/folder (--data-dir / data_dir) "
                                                "does not exist"]


@pytest.mark.parametrize("name", ["null", "yes", "0x10"])
def test_a_data_dir_named_like_a_yaml_value_stays_that_folder(tmp_path, monkeypatch, name):
    """--data-dir null used to mean 'no data dir' (the default search), yes became 'True'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()
    seen = {}
    monkeypatch.setattr(runner, "run", lambda cfg, **kw: seen.update(cfg))
    assert cli(["run", "--preset", "smoke", "--data-dir", name]) == 0
    assert seen["data_dir"] == name


@pytest.fixture
def no_data_anywhere(tmp_path, monkeypatch):
    """No cache, no offline copies, no network: every dataset is missing."""
    monkeypatch.setattr(S, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(S, "MNIST_OFFLINE_DIR", tmp_path / "absent" / "mnist")
    monkeypatch.setattr(S, "FASHION_MNIST_OFFLINE_DIR", tmp_path / "absent" / "fashion")
    monkeypatch.setattr(S, "CIFAR10_JPEG_TARBALL", tmp_path / "absent" / "cifar10-jpeg.tar.gz")

    def offline(name, root):
        raise OSError("network is unreachable")
    monkeypatch.setattr(S, "_torchvision_download", offline)
    monkeypatch.delenv(S.DATA_ENV_VAR, raising=False)
    return tmp_path


def test_a_missing_dataset_is_one_line_not_a_traceback(no_data_anywhere, monkeypatch, capsys):
    """What the runner does first with the data (build the datamodule, prepare_data), raising
    the data layer's real error: the CLI prints its one-line form and exits 2."""
    from lightning_modules.data import build_datamodule

    def run(cfg, **kw):
        build_datamodule(cfg["dataset"], data_dir=cfg["data_dir"]).prepare_data()
    monkeypatch.setattr(runner, "run", run)
    assert cli(["run", "--preset", "smoke", "--set", "dataset=cifar100"]) == 2
    err = one_error_line(capsys, "No data for dataset 'cifar100'. Tried: ")
    assert "--data-dir DIR" in err and S.DATA_ENV_VAR in err


def test_non_finite_data_is_one_line(monkeypatch, capsys):
    from annsnn.simulate import NonFiniteError

    def run(cfg, **kw):
        raise NonFiniteError("non-finite input image for image 13 (batch 1, loader order); 1 of 24 images "
                             "affected; no metrics were computed")
    monkeypatch.setattr(runner, "run", run)
    assert cli(["run", "--preset", "smoke"]) == 2
    one_error_line(capsys, "image 13 (batch 1")


# ----------------------------------------------------------------------------- list

def test_list_still_lists_every_preset_when_one_does_not_load(monkeypatch, capsys):
    real = presets.load

    def load(name, sets=None, light=False):
        if name == "smoke":
            raise presets.PresetError("unknown preset key 'bogus' in smoke.yaml")
        return real(name, sets, light=light)
    monkeypatch.setattr(presets, "load", load)
    assert cli(["list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == presets.available()
    assert re.search(r"^smoke\s+\(does not load: unknown preset key 'bogus'", out, re.M)


def fake_project(tmp_path: Path) -> Path:
    """A copy of reproduce.sh whose .venv/bin/python is this interpreter (installed, so no set-up)."""
    proj = tmp_path / "proj"
    (proj / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(REPO / "reproduce.sh", proj / "reproduce.sh")
    shutil.copy(REPO / "pyproject.toml", proj / "pyproject.toml")
    py = proj / ".venv" / "bin" / "python"
    py.write_text(f'#!/bin/sh\ncd "{REPO}" && exec "{sys.executable}" "$@"\n')
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    (proj / ".venv" / ".installed").touch()
    return proj


def test_reproduce_sh_list_lists_the_presets(tmp_path):
    """`./reproduce.sh list` was taken as a preset named 'list'."""
    proj = fake_project(tmp_path)
    proc = subprocess.run(["./reproduce.sh", "list"], capture_output=True, text=True, cwd=proj)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == presets.available()
    helped = subprocess.run(["./reproduce.sh", "help"], capture_output=True, text=True, cwd=proj).stdout
    assert "./reproduce.sh list" in helped and "set -euo" not in helped


def test_setup_installs_the_interop_extra_once_and_again_when_the_install_changes(tmp_path):
    """`./reproduce.sh setup` (and so `./reproduce.sh test`) installs the dev and interop
    extras and NeuroBench without its dependencies; it does nothing while .venv/.installed is
    newer than pyproject.toml and reproduce.sh, and installs again when either changes."""
    proj = fake_project(tmp_path)
    calls = tmp_path / "calls"
    py = proj / ".venv" / "bin" / "python"
    py.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n')      # records what pip would have done
    stamp = proj / ".venv" / ".installed"

    def setup() -> list[str]:
        calls.write_text("")
        proc = subprocess.run(["./reproduce.sh", "setup"], capture_output=True, text=True, cwd=proj)
        assert proc.returncode == 0, proc.stderr
        return calls.read_text().splitlines()

    def age(path: Path, seconds: int) -> None:
        os.utime(path, (time.time() - seconds, time.time() - seconds))

    for f in ("pyproject.toml", "reproduce.sh"):
        age(proj / f, 60)
    age(stamp, 30)
    assert setup() == []
    installs = ["-m pip install -q --upgrade pip", "-m pip install -q -e .[dev,interop]",
                "-m pip install -q --no-deps neurobench==2.3.0"]
    for changed in ("pyproject.toml", "reproduce.sh"):
        age(stamp, 30)
        (proj / changed).touch()
        assert setup() == installs, changed
        assert setup() == [], f"installed again after {changed} with nothing changed"


# ----------------------------------------------------------------------------- SLURM

def sbatch_output(script: Path) -> str:
    found = [m.group(1) for m in re.finditer(r"^#SBATCH\s+--output[= ](\S+)", script.read_text(), re.M)]
    assert len(found) == 1, f"{script}: one #SBATCH --output line expected, found {found}"
    return found[0]


def test_submit_creates_the_log_folder_before_sbatch(tmp_path):
    """SLURM opens --output (relative to the submit folder) before the job script runs: a
    folder the script creates is too late, and the log is lost."""
    proj = tmp_path / "proj"
    shutil.copytree(REPO / "studies" / "slurm", proj / "studies" / "slurm")
    out = sbatch_output(proj / "studies" / "slurm" / "leak_timestep.sbatch")
    assert not out.startswith("/"), "an absolute --output would not be the project's"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    fake = bindir / "sbatch"   # records its folder and whether --output's folder exists, prints a job id
    fake.write_text(f'#!/bin/sh\nd=$(dirname "{out}")\n'
                    f'if [ -d "$d" ]; then ok=yes; else ok=no; fi\n'
                    f'echo "$PWD $ok $*" >> "{calls}"\necho 42\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = subprocess.run([str(proj / "studies" / "slurm" / "submit.sh")], capture_output=True, text=True,
                          cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 3                                    # init, workers, report
    for line in lines:
        cwd, ok, _ = line.split(" ", 2)
        assert Path(cwd) == proj and ok == "yes", line        # submitted from the project, folder there


def test_the_sbatch_script_alone_does_not_rely_on_creating_its_log_folder():
    script = REPO / "studies" / "slurm" / "leak_timestep.sbatch"
    text = script.read_text()
    out_dir = os.path.dirname(sbatch_output(script))
    if out_dir:
        assert re.search(rf"^#\s+mkdir -p {re.escape(out_dir)}\s*$", text, re.M), \
            "the script's submit instructions must create the log folder first"


# ----------------------------------------------------------------------------- READMEs

ACTIVATE = "source .venv/bin/activate"
SHELL_BLOCK = re.compile(r"^```(bash|sh|shell|console)\s*\n(.*?)^```", re.M | re.S)
COMMAND_START = re.compile(r"^(\./reproduce\.sh|\.venv/bin/|studies/slurm/|" + re.escape(ACTIVATE) + r"$)")


def readme_commands(path: Path):
    """(command line, is the activation line documented before it) for each shell code block line."""
    text = path.read_text()
    for m in SHELL_BLOCK.finditer(text):
        before = text[: m.start()]
        continuation = False
        for line in m.group(2).splitlines():
            line = line.strip()
            if continuation or not line or line.startswith("#"):
                continuation = line.endswith("\\")
                continue
            continuation = line.endswith("\\")
            yield line, ACTIVATE in before


READMES = [REPO / "README.md", REPO / "studies" / "README.md"]


@pytest.mark.parametrize("path", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_readme_command_runs_without_an_activated_venv(path):
    for line, activated in readme_commands(path):
        assert COMMAND_START.match(line) or activated, \
            f"{path.name}: {line!r} needs .venv: start it with ./reproduce.sh or .venv/bin/, " \
            f"or document `{ACTIVATE}` before it"


@pytest.mark.parametrize("path", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_inline_commands_follow_the_documented_activation(path):
    """`python -m ...` in the prose is fine once the README has said to activate the venv."""
    text = path.read_text()
    inline = list(re.finditer(r"(?<!`)`((?:python|pytest|mlflow)\b[^`\n]*)`(?!`)", text))  # not ```python
    if inline:
        first = min(m.start() for m in inline)
        assert ACTIVATE in text[:first], \
            f"{path.name}: {inline[0].group(1)!r} comes before the README says `{ACTIVATE}`"


def test_the_readme_test_catches_a_bare_command(tmp_path):
    bad = tmp_path / "README.md"
    bad.write_text("# x\n\n```bash\n./reproduce.sh\npython -m bench list\n```\n")
    with pytest.raises(AssertionError, match="python -m bench list"):
        test_every_readme_command_runs_without_an_activated_venv(bad)
    good = tmp_path / "ok.md"
    good.write_text(f"# x\n\n```bash\n{ACTIVATE}\n```\n\n```bash\npython -m bench list \\\n  --x\n```\n")
    test_every_readme_command_runs_without_an_activated_venv(good)
