"""Where a preset's run keeps its files, in one place: the runner writes there and the
studies find a trained ANN there, without parsing paths. No heavy imports, so studies can
ask without loading Lightning.

Each seed has its own work folder, runs/<preset>/seed<k>/ (state.json, lock, one folder of
checkpoints per activation), so jobs that run different seeds of one preset side by side
never touch each other's files; a finished seed's results go to
results/<preset>/seeds/seed<k>/, which ``bench.report.aggregate`` merges."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUNS_ENV_VAR = "ANNSNN_RUNS_DIR"


def work_dir(name: str, runs_dir: Path | str | None = None) -> Path:
    """A preset's work folder: ``runs_dir`` (default $ANNSNN_RUNS_DIR, else runs/ in the
    project) / ``name``. Tests point it into a temporary folder."""
    return Path(runs_dir or os.environ.get(RUNS_ENV_VAR) or PROJECT_ROOT / "runs") / name


def seed_dir(preset: str, seed: int, runs_dir: Path | str | None = None) -> Path:
    """One seed's work folder: its state.json, its lock and its checkpoints."""
    return work_dir(preset, runs_dir) / f"seed{seed}"


def checkpoint_path(preset: str, seed: int, activation: str, runs_dir: Path | str | None = None) -> Path:
    """The last checkpoint of the ANN with ``activation`` trained by ``preset`` with ``seed``
    (written at the end of every epoch while it trains)."""
    return seed_dir(preset, seed, runs_dir) / activation / "last.ckpt"


def seed_results_dir(out: Path | str, seed: int) -> Path:
    """A finished seed's records.json, robustness.csv and manifest.json under results/<preset>/."""
    return Path(out) / "seeds" / f"seed{seed}"
