"""Running a seed safely: train each ANN, convert, simulate, measure robustness, write the
seed's folder; interruption-safe and one job per (preset, seed).

  runner.py    the run itself, group by group (``run(cfg)``)
  state.py     the seed's work folder: its lock and the state file ``--resume`` reads
  resume.py    checkpoints every epoch and on SIGTERM, RNG state, no metric logged twice
  layout.py    where a run keeps its files (no heavy imports: studies ask it too)
  manifest.py  what a seed job records beside its numbers
  dry_run.py   the ``--dry-run`` overrides (a few batches of the real code path)
"""
