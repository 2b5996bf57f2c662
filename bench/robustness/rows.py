"""robustness.csv: the stage's rows as a table, written and read back with their types."""
from __future__ import annotations

import csv
import math
from pathlib import Path

FIELDS = ["seed", "family", "method", "source", "attack", "mode", "level", "leak", "leak_mode",
          "point", "T", "n", "acc", "correct", "note", "wall_s"]
# family: clean | noise | ann (a source ANN's own white-box accuracy, method = the source) |
#         transfer (crafted on ``source``, run on the SNN) | snn_pgd (white-box PGD through time) |
#         leak (attack clean or salt_pepper_authors: each leak and leak_mode at T_2 ... T_32, leak 1
#         on the same images and draws) | sanity (gradient-masking checks)
# level: eps in units of 1/255 for attacks, sigma or s for noise, 0 for clean
# point: T_1, T_4, T_op (or ANN; the leak rows T_2 ... T_32); T: the step it stands for; n: images;
# correct: packed bits
TYPES = {"seed": int, "level": float, "leak": float, "T": int, "n": int, "acc": float, "wall_s": float}


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
