#!/usr/bin/env bash
# One entry point: set-up, the default benchmark, the tests, bigger presets, the MLflow UI.
#   ./reproduce.sh              set up .venv if needed and run the `smoke` preset
#   ./reproduce.sh test [args]  run the fast test suite (extra args go to pytest)
#   ./reproduce.sh list         list the presets (name, dataset, architecture, description)
#   ./reproduce.sh <preset>     run a preset from bench/presets/ (e.g. cpu-cifar10)
#   ./reproduce.sh speed        run the speed benchmark (writes results/speed.md)
#   ./reproduce.sh gpu-check    on a CUDA GPU: exactness, a short paper run, simulate speed (writes results/gpu-check.md)
#   ./reproduce.sh dry-runs     every paper preset end to end on tiny fake data (minutes; the slow preset tests)
#   ./reproduce.sh ui           MLflow UI on http://127.0.0.1:5000 (prints each experiment's runs-table link)
#   ./reproduce.sh setup        only create/update .venv (the package with its dev and interop extras)
set -euo pipefail
cd "$(dirname "$0")"
PY=.venv/bin/python

setup() {
    if [ ! -x "$PY" ]; then
        echo "[setup] creating .venv"
        python3 -m venv .venv
    fi
    # Reinstall only when pyproject.toml or this script (the install commands below) changed
    # since the last successful install.
    if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ] || [ reproduce.sh -nt .venv/.installed ]; then
        echo "[setup] installing the package, its pinned dependencies and the interop extra (first time: a few minutes)"
        "$PY" -m pip install -q --upgrade pip
        "$PY" -m pip install -q -e '.[dev,interop]'
        # NeuroBench without its declared dependencies, which serve only its datasets and audio
        # pre-processors (torchaudio has no build for this torch): docs/interop.md#installing
        "$PY" -m pip install -q --no-deps neurobench==2.3.0
        touch .venv/.installed
    fi
}

ensure_fashion_mnist() {
    # The default preset needs Fashion-MNIST; offline machines get it from Debian.
    if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[setup] installing Debian's dataset-fashion-mnist (offline copy)"
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null || \
            echo "[setup] could not install dataset-fashion-mnist; torchvision will try to download"
    fi
}

cmd="${1:-smoke}"
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup ;;
    test)
        setup
        ensure_fashion_mnist
        # Two workers or more (pytest-xdist; at most 4): the suite is mostly single-threaded
        # waiting on subprocesses. Threads that wait sleep instead of spinning, so a worker's
        # two-thread run does not starve the other worker (results do not depend on it).
        export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
        exec "$PY" -m pytest -m "not slow" -n auto --maxprocesses 4 "$@" ;;
    dry-runs)
        # Every paper preset end to end on tiny fake data (bench/run/dry_run.py): what the slow
        # paper-preset tests check, as one command for whoever edits a preset or the run path.
        setup
        tmp="$(mktemp -d)"
        "$PY" tests/fakedata.py write "$tmp/data" >/dev/null
        failed=0
        for f in bench/presets/paper-*.yaml; do
            name="$(basename "$f" .yaml)"; start=$(date +%s)
            if ANNSNN_RUNS_DIR="$tmp/runs" ANNSNN_CACHE="$tmp/cache" "$PY" tests/fakedata.py run --preset "$name" \
                    --dry-run --data-dir "$tmp/data" --tracking-uri "sqlite:///$tmp/mlflow.db" \
                    --out "$tmp/out/$name" --no-progress >"$tmp/$name.log" 2>&1; then
                echo "[dry-runs] $name: OK ($(( $(date +%s) - start )) s)"
            else
                echo "[dry-runs] $name: FAILED, log: $tmp/$name.log"; failed=1
            fi
        done
        exit $failed ;;
    ui)
        setup
        # MLflow 3 sends usage telemetry unless opted out (the tracking package does the same
        # for every Python command); a user who sets either variable keeps that choice.
        if [ -z "${MLFLOW_DISABLE_TELEMETRY+set}${DO_NOT_TRACK+set}" ]; then
            export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
        fi
        # each experiment's runs table (the Experiments list opens an overview page instead)
        store="${MLFLOW_TRACKING_URI:-sqlite:///store/mlflow.db}"
        "$PY" -m tracking.ui_links --store "$store" --base "http://127.0.0.1:${PORT:-5000}" || true
        exec .venv/bin/mlflow ui --backend-store-uri "$store" \
            --default-artifact-root ./store/mlartifacts --host 127.0.0.1 --port "${PORT:-5000}" ;;
    list)
        setup
        exec "$PY" -m bench list "$@" ;;
    speed)
        setup
        exec "$PY" -m bench speed "$@" ;;
    gpu-check)
        setup
        exec "$PY" -m bench.perf.gpu_check "$@" ;;
    -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d' ;;
    *)
        setup
        ensure_fashion_mnist
        exec "$PY" -m bench run --preset "$cmd" "$@" ;;
esac
