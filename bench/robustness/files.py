"""A robustness folder's files: robustness.csv, robustness.md and the figures, the md and
figures rendered from what the CSV holds."""
from __future__ import annotations

from pathlib import Path

from .render import render
from .rows import read_rows, write_csv


def write(cfg: dict, rows: list[dict], out: Path) -> list[Path]:
    """robustness.csv, robustness.md and the seaborn figures; returns the files written."""
    from .plots import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(rows, out / "robustness.csv")
    rows = read_rows(csv_path)   # render what the CSV holds, so the drift test sees the same text
    md = out / "robustness.md"
    md.write_text(render(cfg, rows))
    return [csv_path, md] + plots(cfg, rows, out)
