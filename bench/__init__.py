"""The benchmark: run presets, measure robustness, report and judge, from one command line.

  __main__.py   the command line (``python -m bench run|select|report|export|interop|list|speed``), a thin entry point
  presets.py    what a run does: YAML presets merged over typed defaults, ``--set`` overrides
  stats.py      spread over seeds and the one rule for a difference (hierarchical bootstrap over seeds,
                then images, at a family's Bonferroni level; McNemar per seed), shared by every page
  paper.py      who the verdicts are about: the paper's method and baselines, the suite's ablations
  costs.py      operating points and their costs (ops, energy, binary sub-steps) from a record
  run/          running a seed safely: train, convert, simulate, lock, resume, manifest
  robustness/   noise and attacks on every method, their rows, statistics, pages and figures
  report/       finished seeds into tables, figures and the verdict per claim
  interop_stage.py  a finished run's SNNs as NIR, checked in snnTorch, measured by NeuroBench
  perf/         speed benchmarks and the GPU check

Dependencies point one way: ``run`` uses ``robustness`` and ``report``; ``report`` reads
``robustness`` rows; both use ``stats``, ``costs``, ``paper`` and ``presets``; ``interop_stage``
uses ``run`` (the run's files and data), ``report`` and the ``interop`` package; nothing here is
imported by ``annsnn``, ``interop``, ``tracking`` or ``lightning_modules`` (tests/test_architecture.py).
"""
