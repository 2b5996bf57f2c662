"""Where a preset's run keeps its files (checkpoints, state.json), in one place: the runner
writes there and the studies find a trained ANN there, without parsing paths. No heavy
imports, so studies can ask without loading Lightning."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RUNS_ENV_VAR = "ANNSNN_RUNS_DIR"


def work_dir(name: str, runs_dir: Path | str | None = None) -> Path:
    """A preset's checkpoints and state.json: ``runs_dir`` (default $ANNSNN_RUNS_DIR, else
    runs/ in the project) / ``name``. Tests point it into a temporary folder."""
    return Path(runs_dir or os.environ.get(RUNS_ENV_VAR) or PROJECT_ROOT / "runs") / name


def checkpoint_path(preset: str, seed: int, activation: str, runs_dir: Path | str | None = None) -> Path:
    """The last checkpoint of the ANN with ``activation`` trained by ``preset`` with ``seed``."""
    return work_dir(preset, runs_dir) / f"seed{seed}" / activation / "last.ckpt"
