"""Robustness stage (issue 13, DESIGN section 4): the public API the runner and the report call.

  rows  = evaluate(cfg, anns, dm, seed, records, progress)   one seed's measurements
  files = write(cfg, rows, out_dir)                          robustness.csv, .md and the figures
  rows  = read_rows(csv_path)                                back with their types
  text  = render(cfg, rows)                                  robustness.md from the rows alone
  log_to_mlflow(client, run_id, cfg, rows, method, out_dir)  curves (step = strength), table, figures
  claims(cfg, rows) -> {"noise": {...}, "leak": {...}}       verdicts for results/README.md

Each method is measured at T = 1, T = 4 and its operating point; each row keeps its
per-image correctness, so robust accuracy is a per-image minimum over attacks and every
comparison is paired. The parts live in bench/robust_*.py.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from .robust_eval import FIELDS, evaluate  # noqa: F401 (public API)
from .robust_mlflow import log_to_mlflow  # noqa: F401
from .robust_render import claims, render, robust_rows  # noqa: F401

TYPES = {"seed": int, "level": float, "leak": float, "T": int, "n": int, "acc": float, "wall_s": float}


def write(cfg: dict, rows: list[dict], out: Path) -> list[Path]:
    """robustness.csv, robustness.md and the seaborn figures; returns the files written."""
    from .robust_plots import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(rows, out / "robustness.csv")
    rows = read_rows(csv_path)   # render what the CSV holds, so the drift test sees the same text
    md = out / "robustness.md"
    md.write_text(render(cfg, rows))
    return [csv_path, md] + plots(cfg, rows, out)


def write_csv(rows: list[dict], path: Path) -> Path:
    """The rows as robustness.csv (the FIELDS columns, in order), what read_rows reads back."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r[k]) for k in FIELDS})
    return Path(path)


def _cell(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return v


def read_rows(path: Path) -> list[dict]:
    """robustness.csv back into rows with their types (for re-rendering and the drift test)."""
    with open(path, newline="") as f:
        return [{k: TYPES.get(k, str)(v) for k, v in r.items()} for r in csv.DictReader(f)]
