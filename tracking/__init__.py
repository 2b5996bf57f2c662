"""MLflow, git and plot helpers shared by the benchmark, the studies and the Lightning
callback (none of them needs Lightning): ``import tracking`` and use them by name.

- ``mlflow_runs``: the store, experiments, nested child runs, batched logging within
  MLflow's limits, figures as artifacts;
- ``provenance``: commit and package versions recorded beside every result;
- ``plots``: figures built in memory for ``log_figure``;
- ``optuna_runs``: an Optuna study as a parent run with one nested run per trial;
- ``store``: the SQLite store created, upgraded or repaired in one step (``ensure_store``);
- ``comparison``: one run per seed with every method's curves, and the params' one name per knob;
- ``ui_links``: each experiment's runs-table link, printed by ``./reproduce.sh ui``.

MLflow 3 sends usage telemetry unless told not to; importing this package turns it off (see
``telemetry_off``) before MLflow is imported.
"""
from __future__ import annotations

import os
import sys

# MLflow's own switch (mlflow.environment_variables.MLFLOW_DISABLE_TELEMETRY) and the
# cross-tool convention it also honours (mlflow.telemetry.utils.is_telemetry_disabled).
TELEMETRY_OPT_OUT = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def telemetry_off(environ=os.environ) -> None:
    """Opt out of MLflow's telemetry unless the user decided: when neither variable of
    ``TELEMETRY_OPT_OUT`` is set, set both to "true"; a user who sets either (for instance
    ``MLFLOW_DISABLE_TELEMETRY=false`` to opt in) keeps that choice. If MLflow was imported
    first, its telemetry client (created at import) is set up again under the new setting."""
    if any(k in environ for k in TELEMETRY_OPT_OUT):
        return
    for k, v in TELEMETRY_OPT_OUT.items():
        environ.setdefault(k, v)
    if environ is os.environ and "mlflow" in sys.modules:
        from mlflow.telemetry import set_telemetry_client
        set_telemetry_client()    # drops the client: telemetry is off now


telemetry_off()

from .store import StoreError, ensure_store  # noqa: E402,F401
from .mlflow_runs import (DEFAULT_ARTIFACTS, DEFAULT_TRACKING_URI, EXPERIMENT_KIND, STORE_DIR,  # noqa: E402,F401
                          find_child_run, flatten, get_or_create_experiment, log_batch, log_curve, log_figure, log_params,
                          log_scalars, replace_child_run, start_child_run, tracking_uri)
from .plots import accuracy_figure  # noqa: E402,F401
from .optuna_runs import log_trials, study_key, study_parent_run  # noqa: E402,F401
from .comparison import comparison_name, run_group, run_params, update_comparison  # noqa: E402,F401
from .provenance import PACKAGES, PROJECT_ROOT, git_commit, portable, versions  # noqa: E402,F401
