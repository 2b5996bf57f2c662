"""Links that open MLflow's UI on an experiment's runs table, read from the store without a server.

MLflow 3 opens an experiment from its Experiments list on an overview page, and its runs
table is a separate route, ``#/experiments/<id>/runs``. This module prints that route for
every experiment of a store, with two query parameters the MLflow 3.17 UI reads:

- ``workflowType=machine_learning``: the sidebar in its "Model training" mode (Runs,
  Models, ...), not the GenAI one (Traces, Sessions, ...);
- ``viewStateShareKey=runs-by-group``: a saved view of the runs table, the ``run_group`` and
  ``seed`` tags as columns, newest run first. It is the experiment tag
  ``mlflow.sharedViewState.runs-by-group``, in the envelope the UI writes for its own saved
  views, so it is also listed under **Views** as "Run groups". ``get_or_create_experiment``
  adds it to every experiment; ``experiment_links`` to any experiment made before it existed.

    python -m tracking.ui_links --store sqlite:///store/mlflow.db --base http://127.0.0.1:5000

Without a store file it says which command creates one and exits 0 (``./reproduce.sh ui``
starts the server either way).
"""
from __future__ import annotations

import argparse
import os
import sys

from .mlflow_runs import DEFAULT_TRACKING_URI, RUNS_VIEW, VIEW_KEY, VIEW_TAGS  # noqa: F401 (RUNS_VIEW re-exported)
from .store import ensure_store, sqlite_path

VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
DEFAULT_BASE = "http://127.0.0.1:5000"
CREATE_HINT = "./reproduce.sh (the smoke preset) or ./reproduce.sh <preset>"


def runs_link(experiment_id: str, base: str = DEFAULT_BASE, view: bool = True) -> str:
    """The runs table of one experiment; ``view``: with the run_group column, newest first."""
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={VIEW_KEY}" if view else "")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def add_runs_view(client, experiment) -> None:
    """Give ``experiment`` the runs-by-group view unless it has it already."""
    for k, v in VIEW_TAGS.items():
        if experiment.tags.get(k) != v:
            client.set_experiment_tag(experiment.experiment_id, k, v)


def experiment_links(uri: str, base: str = DEFAULT_BASE) -> list[dict]:
    """Every active experiment with runs: its name, id, number of top-level runs and runs-table
    link (adding the view tag where missing). [] when ``uri`` is a SQLite file that does not exist."""
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return []
    from mlflow.tracking import MlflowClient
    client = MlflowClient(ensure_store(uri))   # an older store is upgraded first, as a run would
    out = []
    for exp in client.search_experiments(order_by=["name ASC"]):
        top = client.search_runs([exp.experiment_id], filter_string="tags.mlflow.parentRunId IS NULL",
                                 max_results=1000)
        if not top:
            continue                      # MLflow's empty "Default", an experiment not yet run
        add_runs_view(client, exp)
        out.append({"name": exp.name, "id": exp.experiment_id, "runs": len(top),
                    "link": runs_link(exp.experiment_id, base)})
    return out


def describe(uri: str, base: str = DEFAULT_BASE) -> str:
    """What ``./reproduce.sh ui`` prints before it starts the server."""
    db = sqlite_path(uri)
    links = experiment_links(uri, base)
    if not links:
        what = (f"{db} does not exist yet: {CREATE_HINT} creates it" if db is not None and not db.exists()
                else f"{uri} holds no runs yet: {CREATE_HINT} logs the first")
        return f"[ui] {what}. Each experiment's runs table is then at {runs_link('<id>', base)}"
    width = max(len(x["name"]) for x in links)
    lines = ["[ui] runs table of each experiment (run_group and seed as columns, newest run first):"]
    lines += [f"  {x['name']:<{width}}  {x['link']}   ({x['runs']} top-level runs)" for x in links]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tracking.ui_links", description=__doc__.split("\n")[0])
    ap.add_argument("--store", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI, else store/mlflow.db)")
    ap.add_argument("--base", default=DEFAULT_BASE, help=f"the UI's address (default {DEFAULT_BASE})")
    args = ap.parse_args(argv)
    uri = args.store or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    try:
        print(describe(uri, args.base), flush=True)
    except Exception as e:  # noqa: BLE001 -- the links are a convenience: never keep the UI from starting
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        print(f"[ui] could not read the experiments of {uri} ({last[:200]}); each runs table is at "
              f"{runs_link('<id>', args.base)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
