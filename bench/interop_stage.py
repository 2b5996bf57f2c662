"""A run's converted SNNs outside the suite (docs/interop.md): written as NIR, checked in a
second simulator (snnTorch), measured with NeuroBench's own metrics.

    python -m bench export --preset P --seed K --method M [--leak l] [--leak-mode exp|linear] --out f.nir
    python -m bench interop --preset P [--seed K] [--images N] [--neurobench-images N'] [--publish]

Both read what ``bench run`` left in runs/<preset>/seed<k>/: the ANN's checkpoint per
activation, and state.json with the preset as run, each ANN's MLflow run and each method's
records (the operating point, chosen on validation, comes from there). The SNN is converted
again exactly as the run converted it: the same checkpoint, the run's calibration images
(``runner.datamodule`` with the seed's split), the same leak. The NIR file goes to the
method's MLflow run (``<method>-leak<l>``, nested under the ANN's run) when that run is in
the tracking store.

The stage writes interop.json (per method: the export or its one-line refusal, the round
trip's agreement, NeuroBench's figures and the suite's own counts on the same images, with
commit, versions, machine class, seed and image counts) and interop.md into the run's
results folder, renders that folder's summary.md again (it gains a section), and logs
NeuroBench's figures as ``neurobench/*`` metrics (step = t) on each method's run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

import interop
import tracking
from annsnn import convert, simulate
from annsnn.metrics import E_AC_PJ, E_MAC_PJ, bits_correct
from annsnn.recipes import get_recipe
from interop.cli import export_main, load_ann
from interop.neurobench_metrics import neurobench_metrics
from interop.roundtrip import roundtrip
from lightning_modules.callbacks import child_name, head
from tracking.machine import machine_class
from tracking.store import sqlite_path

from . import costs, presets
from .report import interop_page, seeds
from .report.summary import render as render_summary
from .run import deterministic, preflight
from .run.layout import checkpoint_path, seed_dir
from .run.runner import datamodule, default_out
from .run.state import STATE_FILE, RunLock

TS = (1, 4, 32)                   # the fixed budgets of the record, beside the operating point
ROUND_TRIP_T_MIN = 32
INTEROP_PACKAGES = ("nir", "nirtorch", "snntorch", "neurobench", "h5py")
NIR_DIR = "interop"               # runs/<preset>/seed<k>/interop/<method>-leak<l>.nir


class StageError(ValueError):
    """Something the stage needs is missing (one-line message)."""


# ----------------------------------------------------------------------------- the run's files

def read_state(preset: str, seed: int, runs_dir=None) -> dict | None:
    path = seed_dir(preset, seed, runs_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def calib_loader(cfg: dict, seed: int):
    """The calibration images of the run (the seed's split of the training set), as the
    runner builds them."""
    return datamodule(cfg, seed, 1, "fit").calib_dataloader()   # test_subset 1: not read here


def _uri(tracking_uri: str | None) -> str:
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or tracking.DEFAULT_TRACKING_URI


def mlflow_client(tracking_uri: str | None) -> tuple[MlflowClient | None, str]:
    """(client, '') for a tracking store that exists, else (None, why not): a store that is
    not there is not created, a server that does not answer is not waited for."""
    uri = _uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return None, f"no tracking store at {tracking.portable(str(db))}"
    try:
        preflight.tracking_uri(uri)
        return MlflowClient(tracking.tracking_uri(uri)), ""
    except (preflight.PreflightError, tracking.StoreError) as exc:
        return None, str(exc)


def method_run(client: MlflowClient | None, state: dict | None, seed: int, method: str,
               leak: float) -> tuple[str | None, str]:
    """(run id, '') of the method's nested run ``<method>-leak<l>`` under the ANN's run that
    state.json records, or (None, why not)."""
    name = child_name(method, leak)
    if state is None:
        return None, "the run's state.json is not there"
    if client is None:
        return None, "no tracking store"
    act = get_recipe(method).activation
    parent = (state.get("groups", {}).get(f"seed{seed}/{act}") or {}).get("run_id")
    if not parent:
        return None, f"state.json records no MLflow run for seed{seed}/{act}"
    try:
        runs = tracking.find_child_run(client, parent, name)
    except Exception as exc:  # noqa: BLE001 -- a parent the store does not hold: say so, in one line
        return None, f"the ANN's run {parent} is not in {client.tracking_uri} ({type(exc).__name__})"
    if not runs:
        return None, f"no run {name} under the ANN's run {parent}"
    return runs[0].info.run_id, ""


# ----------------------------------------------------------------------------- export

def export_command(cfg: dict, argv: list[str], seed: int, method: str, leak: float,
                   out: str, tracking_uri: str | None = None, runs_dir=None) -> int:
    """``python -m bench export``: interop.cli.export_main with the run's calibration images
    and checkpoint, then the file logged on the method's MLflow run (one line either way)."""
    state = read_state(cfg["name"], seed, runs_dir)
    run_cfg = state["preset"] if state else cfg
    code = export_main(argv, calib_loader_for=lambda preset, s: calib_loader(run_cfg, s),
                       checkpoint_for=lambda preset, s, act: checkpoint_path(preset, s, act, runs_dir))
    if code != 0:
        return code
    client, why = mlflow_client(tracking_uri)
    run_id, why = method_run(client, state, seed, method, leak) if client else (None, why)
    if run_id:
        client.log_artifact(run_id, str(out), NIR_DIR)
        print(f"logged {Path(out).name} on MLflow run {run_id} ({child_name(method, leak)}, artifact {NIR_DIR}/)")
    else:
        print(f"not logged in MLflow: {why}")
    return 0


# ----------------------------------------------------------------------------- the stage

def _records(state: dict, seed: int) -> dict[tuple[str, float], dict]:
    out = {}
    for key, g in state.get("groups", {}).items():
        if key.startswith(f"seed{seed}/"):
            for r in g.get("records", []):
                out[(r["method"], float(r["leak"]))] = r
    return out


def _images(loader, n: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
    """The first ``n`` images of ``loader`` as its batches (re-iterable) and as two tensors."""
    batches = [(x, y) for x, y in head(loader, n)]
    return batches, torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def _neurobench(snn, loader, ts: list[int]) -> dict:
    out = {}
    for t in ts:
        nb = neurobench_metrics(snn, loader, t)
        ops = nb["SynapticOperations"]
        out[str(t)] = {"effective_macs": float(ops["Effective_MACs"]),
                       "effective_acs": float(ops["Effective_ACs"]), "dense": float(ops["Dense"]),
                       "activation_sparsity": float(nb["ActivationSparsity"]),
                       "footprint_bytes": int(nb["Footprint"]),
                       "connection_sparsity": float(nb["ConnectionSparsity"]),
                       "accuracy": float(nb["ClassificationAccuracy"])}
    return out


def _suite(snn, batches, ts: list[int], record: dict | None) -> tuple[dict, dict | None]:
    """The suite's own counts on the same images (annsnn.simulate), per image over t steps,
    and how its per-image right/wrong compares with the run's records (the same SNN?)."""
    res = simulate(snn, batches, max(ts), progress=False)
    ns = [max(int(n), 1) for n in res.max_n_per_layer.values()] or [1]
    per_t = {str(t): {"first_layer_macs": res.first_layer_macs * t, "sops": res.sops[t - 1],
                      "energy_pj": E_MAC_PJ * res.first_layer_macs * t + E_AC_PJ * res.sops[t - 1],
                      "ops_ratio": res.sops_ratio(t), "energy_ratio": res.energy_ratio(t),
                      "substeps_max_layer": t * max(ns), "substeps_sum_layers": t * sum(ns),
                      "accuracy": res.acc[t - 1]} for t in ts}
    return per_t, same_as_records(res.predictions == res.labels[:, None], record)


def same_as_records(correct: torch.Tensor, record: dict | None) -> dict | None:
    """Images (of ``correct``'s first n, [n, T]) right or wrong at every t exactly as the
    run's record says (its ``correct_at`` bits, test split order): the run's SNN, converted
    again, should give the same. None without a record."""
    if not record or not record.get("correct_at"):
        return None
    n = min(correct.shape[0], int(record["n_images"]))
    ts = [t for t in range(1, correct.shape[1] + 1) if str(t) in record["correct_at"]]
    if not ts:
        return None
    theirs = torch.stack([torch.from_numpy(bits_correct(record["correct_at"][str(t)], record["n_images"])[:n].copy())
                          for t in ts], 1)
    agree = (theirs == correct[:n, [t - 1 for t in ts]].cpu()).all(1)
    return {"images": n, "t_max": max(ts), "agree": int(agree.sum())}


def _log(client: MlflowClient, run_id: str, entry: dict, nir_file: Path | None, line: str) -> None:
    metrics = []
    now = int(time.time() * 1000)
    from mlflow.entities import Metric, RunTag
    for t, v in (entry.get("neurobench") or {}).items():
        for k in ("effective_macs", "effective_acs", "dense", "activation_sparsity", "accuracy"):
            metrics.append(Metric(f"neurobench/{k}", v[k], now, int(t)))
    first = next(iter((entry.get("neurobench") or {}).values()), None)
    if first:
        metrics += [Metric("neurobench/footprint_bytes", first["footprint_bytes"], now, 0),
                    Metric("neurobench/connection_sparsity", first["connection_sparsity"], now, 0)]
    rt = entry.get("roundtrip")
    if rt:
        metrics += [Metric("interop/identical_predictions", v / rt["n_images"], now, int(t))
                    for t, v in rt["identical"].items()]
        metrics.append(Metric("interop/spike_counts_equal", rt["spike_cells_equal"] / rt["spike_cells"], now, 0))
    tags = [RunTag("interop", line[:5000])]
    if entry.get("operating_t"):
        tags.append(RunTag("interop.operating_t", str(entry["operating_t"])))
    tracking.log_batch(client, run_id, metrics=metrics, tags=tags)
    if nir_file is not None:
        client.log_artifact(run_id, str(nir_file), NIR_DIR)


def method_entry(snn, method: str, leak: float, record: dict | None, batches, nb_loader, nb_batches,
                 input_shape: tuple, nir_path: Path, meta: dict) -> dict:
    """One method's part of interop.json (the SNN is converted; nothing is logged here)."""
    op = costs.operating_t(record, 1.0) if record else None
    ts = sorted(set(TS) | ({op} if op else set()))
    T = max(ROUND_TRIP_T_MIN, op or 0)
    entry = {"method": method, "leak": leak, "leak_mode": "exp", "activation": get_recipe(method).activation,
             "operating_t": op, "export": None, "roundtrip": None, "neurobench": None,
             "neurobench_error": None, "suite": None, "same_as_records": None}
    try:
        interop.check_exportable(snn)
    except interop.ExportError as exc:
        entry["export"] = {"status": "refused", "why": str(exc), "file": None, "nodes": None}
    if entry["export"] is None:
        r = roundtrip(snn, batches, T, input_shape, path=nir_path, metadata=meta)
        import nir
        nodes = len(nir.read(str(nir_path)).nodes)
        entry["export"] = {"status": "verified" if r["images_identical_all_t"] == r["n_images"] else "differs",
                           "why": None, "file": nir_path.name, "nodes": nodes}
        entry["roundtrip"] = {"T": T, "n_images": r["n_images"], "ts": [t for t in TS if t <= T],
                              "identical": {str(t): r["images_identical_per_t"][t - 1] for t in ts},
                              "identical_all_t": r["images_identical_all_t"],
                              "spike_cells_equal": r["spike_cells_equal"], "spike_cells": r["spike_cells"],
                              "first_mismatch": r["first_mismatch"], "repairs": r["repairs"]}
    try:
        entry["neurobench"] = _neurobench(snn, nb_loader, ts)
    except interop.ExportError as exc:      # a network NeuroBench's view cannot wrap (residual)
        entry["neurobench_error"] = str(exc)
    entry["suite"], entry["same_as_records"] = _suite(snn, nb_batches, ts, record)
    return entry


def run(cfg: dict, seed: int | None = None, images: int = 1000, neurobench_images: int = 200,
        out_dir: Path | None = None, publish: bool = False, tracking_uri: str | None = None,
        runs_dir=None) -> dict:
    """The stage on one seed of a finished run of ``cfg``; returns interop.json's content.
    Raises StageError (one line) when the run, a checkpoint or the extra is missing, and
    LockBusy when a run of the same seed holds its folder."""
    t0 = time.time()
    try:
        interop.check_extras()
    except interop.MissingExtraError as exc:
        raise StageError(str(exc)) from None
    name = cfg["name"]
    seed = cfg["seeds"][0] if seed is None else int(seed)
    state = read_state(name, seed, runs_dir)
    if state is None:
        raise StageError(f"no run of preset {name}, seed {seed} in {tracking.portable(str(seed_dir(name, seed, runs_dir)))}: "
                         f"run python -m bench run --preset {name} --seeds {seed} first")
    run_cfg = state["preset"]
    groups = presets.activation_groups(run_cfg)
    ckpts = {act: checkpoint_path(name, seed, act, runs_dir) for act in groups}
    missing = [str(p) for p in ckpts.values() if not p.is_file()]
    if missing:
        raise StageError(f"no trained checkpoint at {tracking.portable(missing[0])}: the run of seed {seed} "
                         "did not finish training; finish it with python -m bench run --resume")
    out = Path(out_dir or default_out(name, publish, runs_dir))
    preflight.writable_dir(out, "output folder (--out)")
    # the seed's folder is read (checkpoints, state) and written (interop/): not while a run
    # of the same seed changes it (LockBusy: one line naming the holder)
    with RunLock(seed_dir(name, seed, runs_dir), what=f"interop stage of preset {name}, seed {seed}"):
        data = _stage(cfg, seed, state, ckpts, groups, images, neurobench_images, out, tracking_uri,
                      runs_dir, t0)
    write(out, data)
    return data


def _stage(cfg: dict, seed: int, state: dict, ckpts: dict, groups: dict, images: int,
           neurobench_images: int, out: Path, tracking_uri: str | None, runs_dir, t0: float) -> dict:
    name, run_cfg = cfg["name"], state["preset"]
    threads = run_cfg["trainer"]["threads"]
    if run_cfg.get("deterministic") and deterministic.env_is_set(int(threads or torch.get_num_threads())):
        deterministic.apply(int(threads or torch.get_num_threads()))   # the run's kernel caps
    elif run_cfg.get("deterministic"):
        print("[interop] the run was made in deterministic mode; this process has not capped the kernels "
              "(python -m bench interop restarts itself with the caps): right/wrong per image is compared "
              "with the run's records below")
    elif threads:
        torch.set_num_threads(int(threads))
    records = _records(state, seed)
    dm = datamodule(run_cfg, seed, run_cfg["test_subset"], "test")
    batches, _, y = _images(dm.test_dataloader(), images)
    nb_batches, nb_x, nb_y = _images(dm.test_dataloader(), neurobench_images)
    nb_loader = DataLoader(TensorDataset(nb_x, nb_y), batch_size=dm.eval_batch_size)
    calib = dm.calib_dataloader()
    client, why_not = mlflow_client(tracking_uri)
    nir_dir = seed_dir(name, seed, runs_dir) / NIR_DIR
    versions = tracking.versions(INTEROP_PACKAGES)
    commit = tracking.git_commit(ignore=[tracking.PROJECT_ROOT / "results", out])
    print(f"[interop] preset {name}, seed {seed}: {len(y)} test images for the round trip, "
          f"{len(nb_y)} for NeuroBench; NIR files in {tracking.portable(str(nir_dir))}")
    entries = []
    for act, methods in groups.items():
        ann, hp = load_ann(ckpts[act])
        size = int(hp["image_size"])
        input_shape = (int(hp["in_channels"]), size, size)
        for method in methods:
            for leak in run_cfg["leaks"]:
                t1 = time.time()
                leak = float(leak)
                label = child_name(method, leak)
                snn = convert(ann, method, calib, leak=leak)
                meta = {"preset": name, "seed": seed, "method": method, "leak": leak, "leak_mode": "exp",
                        "method_description": get_recipe(method).description, "arch": hp["arch"],
                        "checkpoint": tracking.portable(str(ckpts[act])), "commit": commit}
                entry = method_entry(snn, method, leak, records.get((method, leak)), batches, nb_loader,
                                     nb_batches, input_shape, nir_dir / f"{label}.nir", meta)
                line = interop_page.status_line(entry, versions)
                entry["line"] = line
                run_id, why = method_run(client, state, seed, method, leak) if client else (None, why_not)
                entry["mlflow_run_id"] = run_id
                if run_id:
                    _log(client, run_id, entry, nir_dir / entry["export"]["file"] if entry["export"]["file"] else None, line)
                print(f"[interop] {label}: {line}" + ("" if run_id else f" (not logged in MLflow: {why})")
                      + f" [{time.time() - t1:.0f} s]", flush=True)
                entries.append(entry)
    data = {"preset": name, "seed": seed, "commit": commit, "versions": versions, "machine": machine_class(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "images": int(len(y)),
            "neurobench_images": int(len(nb_y)), "batch_size": int(dm.eval_batch_size), "ts": list(TS),
            "wall_seconds": round(time.time() - t0, 1), "methods": entries}
    return data


def write(out: Path, data: dict) -> list[Path]:
    """interop.json and interop.md in ``out``; summary.md again when ``out`` holds a run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / seeds.INTEROP_FILE).write_text(json.dumps(data, indent=1))
    (out / interop_page.PAGE_FILE).write_text(interop_page.render(data))
    written = [out / seeds.INTEROP_FILE, out / interop_page.PAGE_FILE]
    if seeds.is_run(out):
        r = seeds.load(out)
        (out / "summary.md").write_text(render_summary(r.cfg, r.records, r.manifest, interop=r.interop))
        written.append(out / "summary.md")
    for p in written:
        print(f"[interop] wrote {p}")
    return written
