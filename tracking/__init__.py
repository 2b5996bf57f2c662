"""MLflow, git and plot helpers shared by the benchmark, the studies and the Lightning
callback (none of them needs Lightning): ``import tracking`` and use them by name.

- ``mlflow_runs``: the store, experiments, nested child runs, batched logging within
  MLflow's limits, figures as artifacts;
- ``provenance``: commit and package versions recorded beside every result;
- ``plots``: figures built in memory for ``log_figure``;
- ``optuna_runs``: an Optuna study as a parent run with one nested run per trial;
- ``store``: the SQLite store created, upgraded or repaired in one step (``ensure_store``);
- ``comparison``: one run per seed with every method's curves, and the params' one name per knob.
"""
from __future__ import annotations

from .store import StoreError, ensure_store  # noqa: F401
from .mlflow_runs import (DEFAULT_ARTIFACTS, DEFAULT_TRACKING_URI, EXPERIMENT_KIND, STORE_DIR,  # noqa: F401
                          find_child_run, flatten, get_or_create_experiment, log_batch, log_curve, log_figure, log_params,
                          log_scalars, replace_child_run, start_child_run, tracking_uri)
from .plots import accuracy_figure  # noqa: F401
from .optuna_runs import log_trials, study_key, study_parent_run  # noqa: F401
from .comparison import comparison_name, run_params, update_comparison  # noqa: F401
from .provenance import PACKAGES, PROJECT_ROOT, git_commit, portable, versions  # noqa: F401
