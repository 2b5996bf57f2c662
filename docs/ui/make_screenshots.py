"""Regenerate the MLflow UI screenshots in docs/ui/ from a tiny smoke run.

    .venv/bin/python docs/ui/make_screenshots.py            # writes docs/ui/*.png
    .venv/bin/python docs/ui/make_screenshots.py --out DIR  # elsewhere (the test does this)

In a temporary folder: a new SQLite store; the smoke preset, shrunk to run in about a minute
on two cores (one epoch, width 8, 300 test images, T_max 8, four methods, robustness on a few
images), logged to it while ``mlflow ui`` starts over it on a free port; the store's artifact
locations then pointed at the server's ``mlflow-artifacts:/`` scheme (``serve_artifacts``:
the same files, served from the same folder), so that the artifact view shows
``mlflow-artifacts:/smoke/...`` and no temporary folder (``./reproduce.sh ui`` shows the
``file://`` path of store/mlartifacts there); then headless Chromium takes

- ``runs-table.png``: the link ``python -m tracking.ui_links`` prints for the experiment, the
  runs table with the run_group and seed columns, newest run first;
- ``comparison.png``: the compare run's Artifacts tab on ``comparison.png`` (SNN accuracy
  against t, every method), as a click on the run in the table opens it;
- ``robustness-overlay.png``: the same tab on ``robustness_overlay.png`` (every method's
  accuracy against eps and against noise, each at its operating point).

Each page's DOM is checked as well (the run_group column and the run names; the figure
loaded; no temporary path), so a loading or error page fails the script.

Chromium reaches the server under the host name ``mlflow-ui`` (``--host-resolver-rules``; the
server allows that Host header and origin): on a server it sees as local (localhost,
127.0.0.1), MLflow 3.17 opens its Assistant panel on the first visit, which would cover a
third of every screenshot (close it with its X).

Needs Chromium (``chromium`` or ``$CHROMIUM``) and the Fashion-MNIST data the smoke preset
reads. Prints the link and the files written; exits 1 with one line when a step fails.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))   # this checkout's packages, also when another is installed

HOST = "mlflow-ui"              # the name Chromium uses for the server (see above)
SHOTS = ("runs-table.png", "comparison.png", "robustness-overlay.png")
# The smoke preset, shrunk: three ANNs (relu, qcfs, steprelu) of one epoch on a tenth of the
# training split, four methods, and every robustness measurement on a few images.
TINY = ["methods=[maxnorm, qcfs, steprelu, steprelu-single]", "seeds=[0]", "train.epochs=1",
        "val_fraction=0.9", "val_subset=200", "test_subset=300", "calib_size=200", "T_max=8",
        "summary_t=[1,2,4,8]", "arch_kwargs={width: 8}", "trainer.threads=1", "deterministic=false",
        "robustness.enabled=true", "robustness.methods=[maxnorm, qcfs, steprelu]",
        "robustness.test_subset=40", "robustness.noise_images=40", "robustness.transfer_images=20",
        "robustness.snn_attack_images=8", "robustness.leak_images=40", "robustness.sanity_images=0",
        "robustness.T_max=8", "robustness.eps=[4, 8]", "robustness.sources=[relu, steprelu]",
        "robustness.pgd_steps=2", "robustness.pgd_restarts=1", "robustness.snn_pgd_steps=2",
        "robustness.snn_pgd_restarts=1", "robustness.snn_pgd_T_max=8",
        "robustness.gaussian_sigma=[0.05, 0.1]", "robustness.salt_pepper_s=[0.9, 0.95]",
        "robustness.leaks=[1.0, 0.9]", "robustness.leak_modes=[exp]"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", f"--host-resolver-rules=MAP {HOST} 127.0.0.1"]


class Failed(RuntimeError):
    """A step failed; the message is one line."""


def chromium() -> str | None:
    """The Chromium binary: $CHROMIUM, else chromium or chromium-browser on PATH."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Run by the server's process before it becomes ``mlflow ui``: the store built whole (and
# MLflow's "Default" experiment made) before anything else opens it; then a file says so.
PREPARE = ("import os, sys, tracking; from mlflow.tracking import MlflowClient; "
           "MlflowClient(tracking.ensure_store(sys.argv[1], quiet=True)).search_experiments(max_results=1); "
           "open(sys.argv[2], 'w').close(); "
           "os.execv(sys.executable, [sys.executable, '-m', 'mlflow', 'ui', *sys.argv[3:]])")


def start_server(work: Path, port: int) -> subprocess.Popen:
    """Build ``work/mlflow.db``, then ``mlflow ui`` over it, serving artifacts from
    ``work/mlartifacts``; returns at once (``store_ready`` and ``wait_for`` wait)."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with open(work / "server.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", PREPARE, f"sqlite:///{work / 'mlflow.db'}", str(work / "store-ready"),
             "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
             "--artifacts-destination", str(work / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--allowed-hosts", f"127.0.0.1:{port},localhost:{port},{HOST}:{port}",
             "--cors-allowed-origins", f"http://{HOST}:{port}"],
            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def store_ready(proc: subprocess.Popen, work: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not (work / "store-ready").exists():
        if proc.poll() is not None:
            raise Failed("the server's process failed to build the store (its log: server.log in the work "
                         "folder, kept with --keep)")
        if time.time() > deadline:
            raise Failed(f"the store was not built within {timeout:.0f} s")
        time.sleep(0.3)


def wait_for(proc: subprocess.Popen, port: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise Failed("mlflow ui exited at start-up (its log: server.log in the work folder, kept with --keep)")
        time.sleep(0.5)
    raise Failed(f"mlflow ui did not answer within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def screenshot(url: str, png: Path, size: tuple[int, int], work: Path, budget_ms: int = 20000) -> str:
    """One page as Chromium draws it after ``budget_ms`` of virtual time (the SPA loads, fetches
    and renders; virtual time waits for the requests); returns the page's DOM at that moment."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=work))
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
           f"--virtual-time-budget={budget_ms}", f"--screenshot={png}", "--dump-dom", url]
    png.unlink(missing_ok=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if not png.exists():
        tail = r.stderr.strip().splitlines()[-1:] or ["no output"]
        raise Failed(f"chromium wrote no {png.name} ({tail[0][:200]})")
    return r.stdout


def check_page(name: str, dom: str, must: list[str], work: Path) -> None:
    """The page drew what it should (not a loading or error page) and shows no temporary path."""
    missing = [m for m in must if m not in dom]
    if missing:
        raise Failed(f"{name}: the page lacks {', '.join(missing)} (a loading or error page?)")
    if str(work) in dom:
        raise Failed(f"{name}: the page shows the temporary folder {work}")


def serve_artifacts(db: Path, root: Path) -> int:
    """Point the store's artifact locations under ``root`` (absolute ``file://`` URIs, as a
    local run writes them) at the server's ``mlflow-artifacts:/`` scheme, which the server
    maps back to ``root``: the same files, shown without the temporary folder. Returns the
    number of rows changed. Only for this script's throwaway store."""
    prefix = root.resolve().as_uri() + "/"
    con = sqlite3.connect(db)
    try:
        n = 0
        for table, col in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            n += con.execute(f"update {table} set {col} = 'mlflow-artifacts:/' || substr({col}, ?) "
                             f"where {col} like ? || '%'", (len(prefix) + 1, prefix)).rowcount
        con.commit()
    finally:
        con.close()
    return n


def make(out: Path, work: Path) -> dict:
    """Everything above; returns the runs-table link and the files written."""
    port = free_port()
    server = start_server(work, port)     # builds the store, then serves, while this process works
    try:
        from mlflow.tracking import MlflowClient

        from bench import presets
        from bench.run import runner
        from tracking import ui_links
        cfg = presets.load("smoke", TINY)
        db = work / "mlflow.db"
        uri = f"sqlite:///{db}"
        store_ready(server, work)
        t_run = time.time()
        runner.run(cfg, tracking_uri=uri, out_dir=work / "results", runs_dir=work / "runs", progress=False)
        if not serve_artifacts(db, work / "mlartifacts"):
            raise Failed(f"no artifact location of the store is under {work / 'mlartifacts'}")
        wait_for(server, port)
        t_shots = time.time()
        client = MlflowClient(f"http://127.0.0.1:{port}")
        exp = client.get_experiment_by_name(cfg["name"])
        compare = client.search_runs([exp.experiment_id], "tags.kind = 'comparison'")
        if not compare:
            raise Failed("the tiny smoke run left no compare run")
        run = compare[0]
        rid, name, group = run.info.run_id, run.info.run_name, run.data.tags.get("run_group", "")
        base = f"http://{HOST}:{port}"
        # the run pages as a click in the runs table opens them (MLflow drops workflowType there)
        artifacts = f"{base}/#/experiments/{exp.experiment_id}/runs/{rid}/artifacts"
        pages = [(ui_links.runs_link(exp.experiment_id, base), (1400, 620),
                  ["run_group", group, name, "cnn-small-relu-seed0"]),
                 (f"{artifacts}/comparison.png", (1400, 720),
                  [name, 'alt="comparison.png" src="blob:', "mlflow-artifacts:/"]),
                 (f"{artifacts}/robustness_overlay.png", (1600, 640),
                  [name, 'alt="robustness_overlay.png" src="blob:', "mlflow-artifacts:/"])]
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for shot, (url, size, must) in zip(SHOTS, pages):
            dom = screenshot(url, out / shot, size, work)
            check_page(shot, dom, must, work)
            written.append(out / shot)
        return {"link": ui_links.runs_link(exp.experiment_id, f"http://127.0.0.1:{port}"),
                "experiment_id": exp.experiment_id, "compare_run": name, "files": written,
                "run_s": t_shots - t_run, "shots_s": time.time() - t_shots}
    finally:
        stop_server(server)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                    help="folder for the PNGs (default: docs/ui)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store and logs (printed)")
    args = ap.parse_args(argv)
    if chromium() is None:
        print("error: no chromium on PATH (apt-get install chromium, or set $CHROMIUM)", file=sys.stderr)
        return 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="annsnn-ui-"))
    t0 = time.time()
    try:
        res = make(args.out.resolve(), work)
    except Failed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"[screenshots] store and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"[screenshots] runs table: {res['link']} (the server has stopped)")
    for f in res["files"]:
        print(f"[screenshots] wrote {f} ({f.stat().st_size} bytes; page checked)")
    print(f"[screenshots] done in {time.time() - t0:.0f} s (the run and the server's start "
          f"{res['run_s']:.0f} s, the screenshots {res['shots_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
