"""The report: from finished seed folders to tables, figures and verdicts, with no training.

  seeds.py      read results/<preset>/seeds/seed*/ into one run (presets checked, legacy migrated)
  records.py    records grouped and formatted the one way every table uses
  summary.py    summary.md: main table, exactness, paired tests, methods, provenance
  tables.py     operating points and their costs, spike-count distributions
  plots.py      accuracy against t and against energy
  claims.py     results/README.md: one verdict per claim, by stated rules
  published.py  other people's figures at paper scale, with their sources
  pages.py      writes a run's top-level files, results/README.md and README.md's blocks

``aggregate(folder)`` rewrites one preset's top-level files from its seeds;
``report_all()`` does every preset and the verdict page (``python -m bench report --all``).
"""
from __future__ import annotations

from .pages import RESULTS, aggregate, report_all, write_run  # noqa: F401 (public API)
from .seeds import LayoutError, MixedPresets, is_run, migrate  # noqa: F401
