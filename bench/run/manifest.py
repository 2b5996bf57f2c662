"""The manifest a seed job writes beside its records: the preset as run, the commit, the
package versions, the wall time and the machine class (tracking.machine)."""
from __future__ import annotations

import time
from pathlib import Path

import tracking
from tracking.machine import machine_class


def manifest(cfg: dict, wall: float, uri: str, run_ids: dict, out: Path | None = None,
             runtime: dict | None = None) -> dict:
    """``runtime``: what this job decided or measured beside the preset (the training precision
    chosen, the SHA-256 of the weights after each epoch per activation)."""
    # results/ holds outputs, never code: another preset's fresh, uncommitted results in the
    # same checkout (a smoke run just before) do not make this run's code "-dirty"
    ignore = [tracking.PROJECT_ROOT / "results"] + ([out] if out else [])
    return {
        "preset": cfg, "git_commit": tracking.git_commit(ignore=ignore), "versions": tracking.versions(),
        "seeds": cfg["seeds"], "wall_seconds": round(wall, 1),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_class(),
        "tracking_uri": uri.replace(str(tracking.PROJECT_ROOT), "<project>"),
        "mlflow_parent_runs": run_ids,
        **(runtime or {}),
    }

