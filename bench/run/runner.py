"""Run a preset end to end: train each ANN, convert it with every method that uses it,
simulate, track in MLflow, write results/<preset>/.

Seeds are independent: each runs in its own folder, runs/<preset>/seed<k>/, under a lock
(bench.run_state), and a finished seed writes results/<preset>/seeds/seed<k>/, which
``bench.report.aggregate`` merges with whatever other seeds have finished (in this job or
in others). Interruption-safe: the seed's state.json records the MLflow run of each ANN,
whether it finished training, each finished conversion and the robustness rows;
``last.ckpt`` is written after every epoch and on SIGTERM (bench.resume), and ``--resume``
continues from it into the same MLflow runs without logging any step twice.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from mlflow.tracking import MlflowClient

import tracking
from lightning_modules.callbacks import SNNEvaluation
from lightning_modules.data import build_datamodule
from lightning_modules.module import ANNClassifier
from lightning_modules.progress import progress_callback

from .. import presets, report, robustness
from .layout import (RUNS_ENV_VAR, checkpoint_path, seed_dir, seed_results_dir,  # noqa: F401 (re-exported)
                     work_dir)
from .resume import OnceMLFlowLogger, Preemption, RandomState, epoch_checkpoint, signal_hooks
from annsnn.metrics import sha256_state
from tracking.machine import class_line, machine_class

from . import deterministic, precision, preflight
from .manifest import manifest
from .state import RunLock, State

PROJECT_ROOT = tracking.PROJECT_ROOT
LOCK_WAIT_ENV = "ANNSNN_LOCK_WAIT"   # non-empty: wait for a seed another job holds instead of failing


class _MarkTrained(L.Callback):
    """Record in the state file that training finished (before evaluation starts)."""

    def __init__(self, mark):
        self.mark = mark

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero and not trainer.interrupted:
            self.mark()


DDP_TIMEOUT = timedelta(hours=4)


def _strategy(name: str):
    """``ddp`` with a long process-group timeout: after each ANN trains, rank 0 converts and
    simulates every method on the test split while the other ranks already wait in the next
    group's fit; Lightning's default 30-minute timeout would end a paper-scale run there."""
    return DDPStrategy(timeout=DDP_TIMEOUT) if name == "ddp" else name


def _is_rank_zero() -> bool:
    """Under DDP every rank runs this script (Lightning re-launches it); only rank 0 keeps
    the state file and the lock, evaluates, logs and writes results, the others only train."""
    return rank_zero_only.rank == 0


def datamodule(cfg: dict, seed: int, test_subset, stage: str):
    """The preset's data, split with the seed of the run (the same split every time)."""
    dm = build_datamodule(cfg["dataset"], data_dir=cfg["data_dir"], batch_size=cfg["batch_size"],
                          val_fraction=cfg["val_fraction"], seed=seed, num_workers=cfg["num_workers"],
                          calib_size=cfg["calib_size"], eval_batch_size=cfg["eval_batch_size"],
                          test_subset=test_subset)
    dm.prepare_data()
    dm.setup(stage)
    return dm


class BadCalibration(ValueError):
    """A calibration image that is not finite: it would set every threshold it touches."""


def check_calibration(dm) -> None:
    """Every calibration image finite, before training: one NaN pixel would otherwise set each
    max-norm threshold to NaN, then to the fallback 1.0, with only a warning."""
    seen = 0
    for x, _ in dm.calib_dataloader():
        bad = (~torch.isfinite(x.flatten(1))).any(1).nonzero().flatten()
        if len(bad):
            k = seen + int(bad[0])
            raise BadCalibration(f"calibration image {k} (training index {int(dm.calib_indices[k])}) has "
                                 "non-finite pixels; the thresholds of the rate methods would be wrong")
        seen += len(x)


def ann_module(cfg: dict, act: str, info) -> ANNClassifier:
    return ANNClassifier(arch=cfg["arch"], activation={"name": act, **cfg["activations"][act]},
                         num_classes=info.num_classes, in_channels=info.in_channels,
                         image_size=info.image_size, mean=info.mean, std=info.std,
                         arch_kwargs=cfg["arch_kwargs"], **cfg["train"])


def _experiment(uri: str, name: str) -> None:
    """The preset's experiment; two seed jobs starting together may race to create it."""
    try:
        tracking.get_or_create_experiment(MlflowClient(uri), name)
    except Exception:  # the other job created it first
        time.sleep(1)
        tracking.get_or_create_experiment(MlflowClient(uri), name)


def default_out(name: str, publish: bool = False, runs_dir: Path | None = None) -> Path:
    """Where a run's results go: the user's own runs/<preset>/results/ (ignored by git), or,
    only when publishing, the committed reference results/<preset>/ that every run is
    checked against."""
    return PROJECT_ROOT / "results" / name if publish else work_dir(name, runs_dir) / "results"


def run(cfg: dict, resume: bool = False, tracking_uri: str | None = None,
        out_dir: Path | None = None, progress: bool = True, runs_dir: Path | None = None,
        wait: bool | None = None, publish: bool = False, strict: bool = False) -> dict:
    """Every seed of ``cfg`` in turn; returns this job's records, its wall time (all
    segments of its seeds), the results folder and whether it reproduced the reference.
    ``wait``: wait for a seed that another job holds (default: $ANNSNN_LOCK_WAIT), else fail
    naming the holder. ``publish``: write the committed reference results/<preset>/ (the
    maintainers' step) instead of runs/<preset>/results/. ``strict``: a run that does not
    reproduce the reference ends with SystemExit(1)."""
    t0 = time.time()
    out = Path(out_dir or default_out(cfg["name"], publish, runs_dir))
    ckpts = ([checkpoint_path(cfg["name"], s, act, runs_dir) for s in cfg["seeds"]
              for act in presets.activation_groups(cfg)] if resume else [])
    # bad inputs fail here, before any work (the store is created only after)
    preflight.run(cfg, out, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                  or tracking.DEFAULT_TRACKING_URI, ckpts)
    uri = tracking.tracking_uri(tracking_uri)
    wait = bool(os.environ.get(LOCK_WAIT_ENV)) if wait is None else wait
    threads = cfg["trainer"]["threads"]
    if cfg.get("deterministic"):
        deterministic.apply(int(threads or torch.get_num_threads()))
    elif threads:
        torch.set_num_threads(int(threads))
    prec = precision.resolve(cfg["trainer"]["precision"], cfg["trainer"]["accelerator"])
    machine = machine_class()
    _experiment(uri, cfg["name"])
    print(f"[bench] preset {cfg['name']}: {cfg['dataset']} / {cfg['arch']}, methods "
          f"{', '.join(cfg['methods'])}, seeds {cfg['seeds']}, T_max {cfg['T_max']}; tracking {uri}")
    print(f"[bench] machine: {class_line(machine)}; training precision {prec[0]} ({prec[1]})"
          + ("; deterministic mode" if cfg.get("deterministic") else ""))
    records, earlier, summary, error = [], 0.0, None, None
    for i, seed in enumerate(cfg["seeds"]):
        folder = seed_dir(cfg["name"], seed, runs_dir)
        lock = (RunLock(folder, what=f"preset {cfg['name']}, seed {seed}", wait=wait)
                if _is_rank_zero() else nullcontext())
        with lock:
            state = State(folder, cfg, seed, resume, writer=_is_rank_zero(), t0=None if i else t0)
            state.data["precision"] = {"used": prec[0], "why": prec[1], "asked": cfg["trainer"]["precision"]}
            earlier += state.base   # the seed's segments before this job
            mine = _run_seed(cfg, state, seed, uri, folder, resume, progress, out)
        if _is_rank_zero():
            records += mine
            summary, error = _aggregate(cfg, out, runs_dir)
    if not _is_rank_zero():
        return {"records": [], "wall": time.time() - t0, "out": None}
    print(summary)
    this = time.time() - t0
    wall = earlier + this
    budget = cfg.get("budget_minutes")
    print(f"[bench] wall time {wall:.0f} s ({wall / 60:.1f} min), all segments of seeds {cfg['seeds']} "
          f"(this segment {this:.0f} s)"
          + (f", budget {budget} min on {class_line(machine)}: {'OK' if wall <= budget * 60 else 'OVER'}"
             if budget else ""))
    if error:
        raise SystemExit(error)
    reproduced = None
    if not publish:
        reproduced = _reproduction(cfg, out)
    print(f"[bench] results in {out}" + ("" if publish else " (the committed reference in results/ is "
                                          "untouched)") + "; compare runs with ./reproduce.sh ui")
    if strict and reproduced is False:
        raise SystemExit(1)
    return {"records": records, "wall": wall, "out": out, "reproduced": reproduced}


def _reproduction(cfg: dict, out: Path) -> bool | None:
    """The check against the committed reference (bench.report.reproduction), printed and
    written to reproduction.md beside the results; None when there is nothing to check against."""
    from ..report import reproduction, seeds as seeds_io
    committed_dir = PROJECT_ROOT / "results" / cfg["name"]
    if Path(out).resolve() == committed_dir.resolve():
        return None
    committed = seeds_io.load(committed_dir) if seeds_io.is_run(committed_dir) else None
    try:
        text, ok, printed = reproduction.check(seeds_io.load(out), committed, PROJECT_ROOT / "results")
    except seeds_io.LayoutError as exc:
        print(f"[bench] reproduction check skipped: {exc}")
        return None
    (Path(out) / "reproduction.md").write_text(text)
    print(printed)
    print(f"[bench] reproduction check written to {Path(out) / 'reproduction.md'}")
    return ok if committed is not None else None


def _run_seed(cfg: dict, state: State, seed: int, uri: str, folder: Path, resume: bool,
              progress: bool, out: Path) -> list[dict]:
    """Train, convert and evaluate every group of one seed, then its robustness stage, then
    write its results folder; returns its records (rank 0; [] on other ranks)."""
    groups = presets.activation_groups(cfg)
    for act, methods in groups.items():
        _run_group(cfg, state, seed, act, methods, uri, folder, resume, progress)
    if not _is_rank_zero():
        return []
    records = [dict(r, seed=seed, activation=k.split("/")[1])
               for k, g in state.data["groups"].items() for r in g["records"]]
    rows = (_run_robustness(cfg, state, seed, groups, records, uri, folder, progress)
            if cfg["robustness"]["enabled"] else None)
    state.save()
    _write_seed(cfg, seed, records, rows, state, uri, out)
    return records


def _write_seed(cfg: dict, seed: int, records: list[dict], rows: list[dict] | None, state: State,
                uri: str, out: Path) -> Path:
    """results/<preset>/seeds/seed<k>/ as one unit: written beside it, then swapped in, so a
    reader (the report, another seed's job) sees the old folder or the new, never half."""
    dst = seed_results_dir(out, seed)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "records.json").write_text(json.dumps({"seed": seed, "records": records}, indent=1))
    if rows is not None:
        robustness.write_csv(rows, tmp / "robustness.csv")
    run_ids = {k: g.get("run_id") for k, g in state.data["groups"].items()}
    runtime = {"precision": state.data.get("precision"), "data_source": state.data.get("data_source"),
               "weight_sha256": {k.split("/")[1]: g.get("weight_sha256", []) for k, g in state.data["groups"].items()}}
    man = manifest(cfg, state.elapsed, uri, run_ids, out, runtime)
    (tmp / "manifest.json").write_text(json.dumps(man, indent=2))
    old = dst.with_name(f".{dst.name}.old{os.getpid()}")
    if dst.exists():
        dst.replace(old)
    tmp.replace(dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst


def _aggregate(cfg: dict, out: Path, runs_dir) -> tuple[str, str | None]:
    """The top-level results from every finished seed, one writer at a time per preset;
    (summary, None), or ("", the one-line error) when the seed folders ran different
    presets (this seed's own folder is written either way)."""
    with RunLock(work_dir(cfg["name"], runs_dir), what=f"writing {out}", wait=True):
        try:
            return report.aggregate(out), None
        except report.MixedPresets as exc:
            return "", f"error: {exc}"


def _run_group(cfg, state: State, seed: int, act: str, methods: list[str], uri: str,
               folder: Path, resume: bool, progress: bool) -> None:
    key = f"seed{seed}/{act}"
    st = state.group(key)
    if st.get("complete"):
        print(f"[bench] {key}: already complete, skipped")
        return
    L.seed_everything(seed, workers=True)
    dm = datamodule(cfg, seed, cfg["test_subset"], "fit")
    check_calibration(dm)
    state.data["data_source"] = tracking.portable(str(dm.source), siblings=True)   # ../shared/data, not an absolute path
    module = ann_module(cfg, act, dm.info)
    run_name = f"{cfg['arch']}-{act}-seed{seed}"
    commit = tracking.git_commit(ignore=[PROJECT_ROOT / "results"])   # outputs, never code: as the manifest
    group = state.data.setdefault("run_group", tracking.run_group(cfg, seed, commit))
    logger = OnceMLFlowLogger(experiment_name=cfg["name"], tracking_uri=uri, run_id=st.get("run_id"),
                              run_name=run_name, artifact_location=None,
                              tags={"git_commit": commit, "dataset": cfg["dataset"], "run_group": group,
                                    "arch": cfg["arch"], "activation": act, "seed": str(seed),
                                    "methods": ",".join(methods),
                                    **{f"version.{k}": v for k, v in tracking.versions().items()}})
    if "run_id" not in st:
        st["run_id"] = logger.run_id
        # one name per knob, its key in the preset (as --set takes it): tracking.run_params
        logger.log_hyperparams(tracking.run_params(cfg, seed, act))
        state.save()
    last = checkpoint_path(cfg["name"], seed, act, folder.parent.parent)

    def on_result(record, run_id):
        st["records"].append(dict(record, run_id=run_id))
        state.save()

    done = {(r["method"], r["leak"]) for r in st["records"]}
    evaluator = SNNEvaluation(methods, cfg["T_max"], cfg["leaks"],
                              cfg["eval_every_k_epochs"],
                              params=tracking.run_params(cfg, seed, act),
                              done=done, on_result=on_result, progress=progress,
                              val_subset=cfg["val_subset"], layer_error_t=cfg["layer_error_t"])

    def mark_trained():
        st["trained"] = True
        state.save()

    def epoch_done(trainer):  # after the epoch's checkpoint: the wall time so far, epochs trained
        st["epochs"] = trainer.current_epoch + 1
        hashes = st.setdefault("weight_sha256", [])   # bit-identical runs have equal hashes
        del hashes[trainer.current_epoch:]
        hashes.append(sha256_state(trainer.lightning_module.model))
        state.save()

    preemption = Preemption(last, on_epoch=epoch_done)
    tc = cfg["trainer"]
    trainer = L.Trainer(max_epochs=cfg["train"]["epochs"], accelerator=tc["accelerator"],
                        devices=tc["devices"], num_nodes=tc["num_nodes"], strategy=_strategy(tc["strategy"]),
                        precision=state.data["precision"]["used"], logger=logger,
                        deterministic=bool(cfg.get("deterministic")),
                        limit_train_batches=tc["limit_train_batches"],
                        limit_val_batches=tc["limit_val_batches"],
                        callbacks=[epoch_checkpoint(last), RandomState(), preemption,
                                   _MarkTrained(mark_trained), evaluator]
                        + ([progress_callback()] if progress else []) + signal_hooks(),
                        enable_model_summary=False, enable_progress_bar=progress,
                        log_every_n_steps=50, num_sanity_val_steps=0)
    if st.get("trained") and last.exists():
        print(f"[bench] {key}: trained earlier, evaluating from {last}")
        module = ANNClassifier.load_from_checkpoint(last, map_location="cpu")
        dm.setup("test")
        if _is_rank_zero():
            evaluator.evaluate(module.model, dm, logger.experiment, logger.run_id)
    else:
        if resume and last.exists():
            print(f"[bench] {key}: resuming training from {last} (epochs done: {st.get('epochs', '?')})")
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=last if (resume and last.exists()) else None)
        except SIGTERMException:
            state.save()
            raise SystemExit(f"[bench] SIGTERM: saved {last} at step {trainer.global_step}; "
                             f"rerun with --resume to continue") from None
        if trainer.interrupted:
            raise SystemExit(f"[bench] interrupted; rerun with --resume to continue from {last}")
    if trainer.is_global_zero:
        client = logger.experiment
        if last.exists():
            client.log_artifact(logger.run_id, str(last), "checkpoint")
        client.set_terminated(logger.run_id)
        st["complete"] = True
        state.save()


def _run_robustness(cfg, state: State, seed: int, groups: dict, records: list[dict], uri: str,
                    folder: Path, progress: bool) -> list[dict]:
    """Noise and attack evaluation of every method on its trained ANN. Each unit of the stage
    is kept in the state once measured (bench.robustness.measure), then the rows, and each
    method's child run is marked when logged, so a resumed job neither measures nor logs
    anything twice."""
    rob = state.data.setdefault("robustness", {})
    if "rows" not in rob:
        rc = cfg["robustness"]
        dm = datamodule(cfg, seed, rc["test_subset"], "test")
        anns = {act: ANNClassifier.load_from_checkpoint(checkpoint_path(cfg["name"], seed, act,
                                                                        folder.parent.parent),
                                                        map_location="cpu").model.eval()
                for act in groups}
        kept = rob.setdefault("units", {})
        print(f"[bench] robustness seed {seed}"
              + (f" (resumed: {len(kept)} units kept from before)" if kept else ""))
        rob["rows"] = robustness.evaluate(cfg, anns, dm, seed, records, progress=progress, kept=kept,
                                          on_unit=lambda key: state.save())
        walls = {k: u["wall_s"] for k, u in rob.pop("units").items()}   # the rows hold the rest
        rob["unit_wall_s"] = walls
        state.save()
        parts: Counter[str] = Counter()
        for k, w in walls.items():
            parts[k.split("/")[0]] += w
        print(f"[bench] robustness seed {seed}: {sum(walls.values()):.0f} s; by part: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in parts.items()), flush=True)
    rows, logged = rob["rows"], rob.setdefault("logged", [])
    client = MlflowClient(uri)
    for act, methods in groups.items():
        parent = state.group(f"seed{seed}/{act}")["run_id"]
        for method in methods:
            if method in logged or not any(r["method"] == method for r in rows):
                continue   # logged before an interruption, or not measured (robustness.methods)
            run_id = tracking.replace_child_run(client, parent, f"{method}-robustness",
                                                tags={"method": method, "stage": "robustness",
                                                      "seed": str(seed), "run_group": state.data.get("run_group", "")})
            robustness.log_to_mlflow(client, run_id, cfg, rows, method, folder / "robustness" / method)
            client.set_terminated(run_id)
            logged.append(method)
            state.save()
    exp = client.get_experiment_by_name(cfg["name"])
    if exp is not None:   # every method of this invocation in one overlay, on its compare run
        robustness.log_overlay(client, exp.experiment_id, seed, state.data.get("run_group"), rows,
                               cfg["robustness"]["common_source"])
    return rows
