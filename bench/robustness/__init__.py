"""The robustness stage (docs/method.md#robustness): noise and attacks on every method.

  rows  = evaluate(cfg, anns, dm, seed, records, progress)   one seed's measurements (measure.py)
  files = write(cfg, rows, out_dir)                          robustness.csv, .md and the figures
  rows  = read_rows(csv_path)                                back with their types (rows.py)
  text  = render(cfg, rows)                                  robustness.md from the rows alone (render.py)
  log_to_mlflow(client, run_id, cfg, rows, method, out_dir)  curves (step = strength), table, figures
  claims(cfg, rows) -> {"noise", "adversarial", "leak_clean", "leak_noise"}: Claim each (verdicts.py)

Each method is measured at T = 1, T = 4 and its operating point; each row keeps its
per-image correctness, so robust accuracy is a per-image minimum over attacks and every
comparison is paired (stats.py, groups.py). verdicts.py judges the noise, adversarial and
leak claims from the rows by the suite's one rule (bench.stats). The measuring half (measure, sanity, mlflow_log) needs
torch and is imported when first used, so the report reads and renders rows without it.
"""
from __future__ import annotations

from .files import write  # noqa: F401 (public API)
from .groups import robust_rows  # noqa: F401
from .render import render  # noqa: F401
from .verdicts import claims  # noqa: F401
from .rows import FIELDS, TYPES, read_rows, write_csv  # noqa: F401

_LAZY = {"evaluate": ".measure", "log_to_mlflow": ".mlflow_log", "log_overlay": ".mlflow_log"}


def __getattr__(name):
    """``evaluate``, ``log_to_mlflow`` and ``log_overlay`` on first use (torch and MLflow)."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
# No submodule may share a lazy name: importing bench.robustness.<name> sets the package's
# attribute <name> to that module, and robustness.evaluate(...) then calls a module (a
# second seed in one process failed so; tests/test_robustness.py checks every lazy name).
