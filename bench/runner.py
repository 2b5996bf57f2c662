"""Run a preset end to end: train each ANN, convert it with every method that uses it,
simulate, track in MLflow, write results/<preset>/.

Interruption-safe: ``runs/<preset>/state.json`` records the MLflow run of each ANN,
whether it finished training, and each finished conversion; ``--resume`` continues
from the last checkpoint into the same MLflow runs without re-logging anything.
"""
from __future__ import annotations

import json
import shutil
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from mlflow.tracking import MlflowClient

import tracking
from lightning_modules.callbacks import SNNEvaluation
from lightning_modules.data import build_datamodule
from lightning_modules.module import ANNClassifier
from lightning_modules.progress import progress_callback

from . import presets, report, robustness
from .layout import RUNS_ENV_VAR, checkpoint_path, work_dir  # noqa: F401 (RUNS_ENV_VAR re-exported)

PROJECT_ROOT = tracking.PROJECT_ROOT


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
    the state file, evaluates, logs and writes results, the others only train."""
    return rank_zero_only.rank == 0


class State:
    def __init__(self, path: Path, cfg: dict, resume: bool):
        self.path = path
        self.writer = _is_rank_zero()
        if resume and path.exists():
            self.data = json.loads(path.read_text())
            if self.data.get("preset") != cfg:
                raise SystemExit(f"--resume: the preset differs from the interrupted run's "
                                 f"({path}); rerun without --resume to start over")
        else:
            if resume:
                print(f"[bench] nothing to resume in {path.parent}; starting a fresh run")
            if path.parent.exists() and self.writer:
                shutil.rmtree(path.parent)
            self.data = {"preset": cfg, "groups": {}, "started": time.time(), "elapsed": 0.0}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.save()

    def group(self, key: str) -> dict:
        return self.data["groups"].setdefault(key, {"records": []})

    def save(self) -> None:
        if not self.writer:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)


def _datamodule(cfg: dict, seed: int, test_subset, stage: str):
    """The preset's data, split with the seed of the run (the same split every time)."""
    dm = build_datamodule(cfg["dataset"], data_dir=cfg["data_dir"], batch_size=cfg["batch_size"],
                          val_fraction=cfg["val_fraction"], seed=seed, num_workers=cfg["num_workers"],
                          calib_size=cfg["calib_size"], eval_batch_size=cfg["eval_batch_size"],
                          test_subset=test_subset)
    dm.prepare_data()
    dm.setup(stage)
    return dm


def _module(cfg: dict, act: str, info) -> ANNClassifier:
    return ANNClassifier(arch=cfg["arch"], activation={"name": act, **cfg["activations"][act]},
                         num_classes=info.num_classes, in_channels=info.in_channels,
                         image_size=info.image_size, mean=info.mean, std=info.std,
                         arch_kwargs=cfg["arch_kwargs"], **cfg["train"])


def run(cfg: dict, resume: bool = False, tracking_uri: str | None = None,
        out_dir: Path | None = None, progress: bool = True, runs_dir: Path | None = None) -> dict:
    t0 = time.time()
    uri = tracking.tracking_uri(tracking_uri)
    work = work_dir(cfg["name"], runs_dir)
    state = State(work / "state.json", cfg, resume)
    threads = cfg["trainer"]["threads"]
    if threads:
        torch.set_num_threads(int(threads))
    groups = presets.activation_groups(cfg)
    tracking.get_or_create_experiment(MlflowClient(uri), cfg["name"])
    print(f"[bench] preset {cfg['name']}: {cfg['dataset']} / {cfg['arch']}, methods "
          f"{', '.join(cfg['methods'])}, seeds {cfg['seeds']}, T_max {cfg['T_max']}; tracking {uri}")
    for seed in cfg["seeds"]:
        for act, methods in groups.items():
            _run_group(cfg, state, seed, act, methods, uri, work, resume, progress)
    if not _is_rank_zero():
        return {"records": [], "wall": time.time() - t0, "out": None}
    records = [dict(r, seed=int(k.split("/")[0][4:]), activation=k.split("/")[1])
               for k, g in state.data["groups"].items() for r in g["records"]]
    out = out_dir or PROJECT_ROOT / "results" / cfg["name"]
    if cfg["robustness"]["enabled"]:
        rows = []
        for seed in cfg["seeds"]:
            rows += _run_robustness(cfg, state, seed, groups, uri, work, progress)
        robustness.write(cfg, rows, out)
    wall = state.data["elapsed"] + (time.time() - t0)
    state.data["elapsed"] = wall
    state.save()
    summary = report.write(cfg, records, out, wall, uri,
                           {k: g.get("run_id") for k, g in state.data["groups"].items()})
    print(summary)
    budget = cfg.get("budget_minutes")
    print(f"[bench] wall time {wall:.0f} s ({wall / 60:.1f} min)"
          + (f", budget {budget} min: {'OK' if wall <= budget * 60 else 'OVER'}" if budget else ""))
    print(f"[bench] results in {out}; compare runs with ./reproduce.sh ui")
    return {"records": records, "wall": wall, "out": out}


def _run_group(cfg, state: State, seed: int, act: str, methods: list[str], uri: str,
               work: Path, resume: bool, progress: bool) -> None:
    key = f"seed{seed}/{act}"
    st = state.group(key)
    if st.get("complete"):
        print(f"[bench] {key}: already complete, skipped")
        return
    L.seed_everything(seed, workers=True)
    dm = _datamodule(cfg, seed, cfg["test_subset"], "fit")
    module = _module(cfg, act, dm.info)
    run_name = f"{cfg['arch']}-{act}-seed{seed}"
    logger = MLFlowLogger(experiment_name=cfg["name"], tracking_uri=uri, run_id=st.get("run_id"),
                          run_name=run_name, artifact_location=None,
                          tags={"git_commit": tracking.git_commit(), "dataset": cfg["dataset"],
                                "arch": cfg["arch"], "activation": act, "seed": str(seed),
                                "methods": ",".join(methods),
                                **{f"version.{k}": v for k, v in tracking.versions().items()}})
    if "run_id" not in st:
        st["run_id"] = logger.run_id
        logger.log_hyperparams(tracking.flatten({"preset": cfg["name"], "seed": seed, "activation": act,
                                                  **{k: v for k, v in cfg.items() if k != "name"}}))
        state.save()
    ckpt_dir = checkpoint_path(cfg["name"], seed, act, work.parent).parent
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_epochs=1)

    def on_result(record, run_id):
        st["records"].append(dict(record, run_id=run_id))
        state.save()

    done = {(r["method"], r["leak"]) for r in st["records"]}
    evaluator = SNNEvaluation(methods, cfg["T_max"], cfg["leaks"],
                              cfg["eval_every_k_epochs"],
                              params={"preset": cfg["name"], "seed": seed, "dataset": cfg["dataset"],
                                      "arch": cfg["arch"], "activation": act,
                                      "activation_knobs": cfg["activations"][act],
                                      "calib_size": cfg["calib_size"]},
                              done=done, on_result=on_result, progress=progress)

    def mark_trained():
        st["trained"] = True
        state.save()

    tc = cfg["trainer"]
    trainer = L.Trainer(max_epochs=cfg["train"]["epochs"], accelerator=tc["accelerator"],
                        devices=tc["devices"], num_nodes=tc["num_nodes"], strategy=_strategy(tc["strategy"]),
                        precision=tc["precision"], logger=logger,
                        limit_train_batches=tc["limit_train_batches"],
                        limit_val_batches=tc["limit_val_batches"],
                        callbacks=[ckpt, _MarkTrained(mark_trained), evaluator]
                        + ([progress_callback()] if progress else []),
                        enable_model_summary=False, enable_progress_bar=progress,
                        log_every_n_steps=50, num_sanity_val_steps=0)
    last = ckpt_dir / "last.ckpt"
    if st.get("trained") and last.exists():
        print(f"[bench] {key}: trained earlier, evaluating from {last}")
        module = ANNClassifier.load_from_checkpoint(last, map_location="cpu")
        dm.setup("test")
        if _is_rank_zero():
            evaluator.evaluate(module.model, dm, logger.experiment, logger.run_id)
    else:
        trainer.fit(module, datamodule=dm, ckpt_path=last if (resume and last.exists()) else None)
        if trainer.interrupted:
            raise SystemExit(f"[bench] interrupted; rerun with --resume to continue from {last}")
    if trainer.is_global_zero:
        client = logger.experiment
        if last.exists():
            client.log_artifact(logger.run_id, str(last), "checkpoint")
        client.set_terminated(logger.run_id)
        st["complete"] = True
        state.save()


def _run_robustness(cfg, state: State, seed: int, groups: dict, uri: str, work: Path,
                    progress: bool) -> list[dict]:
    """Noise and attack evaluation of every method on its trained ANN; resumable per seed."""
    done = state.data.setdefault("robustness", {})
    if str(seed) in done:
        print(f"[bench] robustness seed {seed}: already complete, skipped")
        return done[str(seed)]
    rc = cfg["robustness"]
    dm = _datamodule(cfg, seed, rc["test_subset"], "test")
    anns = {act: ANNClassifier.load_from_checkpoint(checkpoint_path(cfg["name"], seed, act, work.parent),
                                                    map_location="cpu").model.eval()
            for act in groups}
    print(f"[bench] robustness seed {seed}: {len(cfg['methods'])} methods x {len(rc['leaks'])} leaks")
    rows = robustness.evaluate(cfg, anns, dm, seed, progress)
    client = MlflowClient(uri)
    for act, methods in groups.items():
        parent = state.group(f"seed{seed}/{act}")["run_id"]
        for method in methods:
            name = f"{method}-robustness"
            run_id = tracking.replace_child_run(client, parent, name,
                                                tags={"method": method, "stage": "robustness"})
            tracking.log_params(client, run_id, {"method": method, "robustness": rc, "seed": seed})
            tracking.log_scalars(client, run_id, {robustness.metric_key(r): r["acc"]
                                                  for r in rows if r["method"] == method})
            mine = [r for r in rows if r["method"] == method]
            for f in robustness.write(dict(cfg, methods=[method]), mine, work / "robustness" / method):
                client.log_artifact(run_id, str(f))
            client.set_terminated(run_id)
    done[str(seed)] = rows
    state.save()
    return rows
