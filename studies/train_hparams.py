"""Optuna study over StepReLU training knobs: threshold theta, levels L, learning rate, weight decay.

    python -m studies.train_hparams --n-trials 20 --workers 2 --epochs 2 --train-subset 5000
    python -m studies.train_hparams --storage sqlite:///optuna.db --ddp-cpu 2   # DDP inside a trial

Each trial trains a StepReLU ANN with Lightning (``ANNClassifier``, SGD + cosine schedule) for
``--epochs`` epochs on the first ``--train-subset`` images of the training part, reports the
ANN's validation accuracy after every epoch to Optuna, and is pruned early by the median rule
(``optuna_integration.PyTorchLightningPruningCallback``). Its objective is the converted SNN's
validation accuracy at step ``--T`` (``--objective snn``, default; the multi-spike neuron of
method ``steprelu``) or the ANN's (``--objective ann``). Everything is measured on the
validation split (the first ``--val-subset`` images of the part held out of the training set);
the test split is never touched.

``--ddp-cpu N`` trains inside each trial with Lightning DDP on N CPU processes (gloo backend,
``strategy="ddp_spawn"``: the plain ``"ddp"`` strategy re-executes this script in every rank,
which would start the whole study N times). Pruning under DDP needs an RDB storage (SQLite or
PostgreSQL): optuna-integration's callback supports only RDBStorage there. Validation under
DDP gives every rank its share of the images (padded by repetition to equal shares) and the
logged ``val_acc`` is averaged over ranks, so every rank sees the same value.

Storage and worker options are those of ``studies.leak_timestep`` (``--n-trials`` is the
total of finished trials, COMPLETE or PRUNED, over all workers).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import lightning as L
import optuna
from optuna.trial import TrialState

from . import roles as R
from . import storage as st
from . import workers as W

PROG = "python -m studies.train_hparams"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SPACE = {"theta": (0.01, 0.2), "L": (2, 32), "lr": (1e-3, 0.3), "weight_decay": (1e-5, 1e-2)}


def subset_datamodule(dataset: str, data_dir, batch_size: int, train_subset: int | None,
                      val_subset: int | None, seed: int = 0, val_fraction: float = 0.1):
    """The benchmark's datamodule, cut to the head of its (seeded, random-order) train and
    validation parts; calibration and test loaders are left alone."""
    from torch.utils.data import Subset

    from lightning_modules.data import build_datamodule
    dm = build_datamodule(dataset, data_dir=data_dir, batch_size=batch_size, seed=seed,
                          val_fraction=val_fraction, eval_batch_size=max(batch_size, 250))
    dm.prepare_data()
    dm.setup("fit")
    if train_subset:
        dm.train_set = Subset(dm.train_set, range(min(train_subset, len(dm.train_set))))
    if val_subset:
        dm.val_set = Subset(dm.val_set, range(min(val_subset, len(dm.val_set))))
    return dm


def make_module(hp: dict, info, arch: str, arch_kwargs: dict, epochs: int):
    from lightning_modules.module import ANNClassifier
    return ANNClassifier(
        arch=arch, activation={"name": "steprelu", "theta": hp["theta"], "L": hp["L"], "phi": 0.0,
                               "clip": True, "learn_theta": False},
        num_classes=info.num_classes, in_channels=info.in_channels, image_size=info.image_size,
        mean=info.mean, std=info.std, arch_kwargs=arch_kwargs, optimizer="sgd", lr=hp["lr"],
        weight_decay=hp["weight_decay"], schedule="cosine", epochs=epochs)


class RankValAcc(L.Callback):
    """Writes each rank's ``val_acc`` after every validation run to ``<folder>/rank<r>.jsonl``:
    shows that the DDP ranks agree (used by the tests)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = str(folder)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        v = trainer.callback_metrics.get("val_acc")
        rec = {"rank": trainer.global_rank, "world_size": trainer.world_size,
               "epoch": trainer.current_epoch, "val_acc": None if v is None else float(v)}
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        with open(Path(self.folder) / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")


class _ReleaseProcessGroup(L.Callback):
    """Each spawned rank closes its gloo process group when fit ends. Left to interpreter
    exit, its teardown aborted a rank now and then ("terminate called without an active
    exception", about 1 run in 4 of the DDP test here); nothing collective follows fit."""

    def teardown(self, trainer, pl_module, stage):
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def train_once(hp: dict, dm, arch: str = "cnn-small", arch_kwargs: dict | None = None,
               epochs: int = 1, ddp_cpu: int = 0, callbacks=(), seed: int = 0,
               max_steps: int = -1):
    """Train one ANN; returns (module, trainer). ``ddp_cpu >= 2``: DDP on that many CPU processes."""
    L.seed_everything(seed, workers=True, verbose=False)
    module = make_module(hp, dm.info, arch, arch_kwargs or {}, epochs)
    kw = dict(accelerator="cpu", devices=1, strategy="auto")
    if ddp_cpu and ddp_cpu > 1:
        from lightning.pytorch.strategies import DDPStrategy
        kw = dict(accelerator="cpu", devices=int(ddp_cpu),
                  strategy=DDPStrategy(start_method="spawn", process_group_backend="gloo"))
        callbacks = [*callbacks, _ReleaseProcessGroup()]
    trainer = L.Trainer(max_epochs=epochs, max_steps=max_steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=list(callbacks), **kw)
    trainer.fit(module, datamodule=dm)
    return module, trainer


def snn_val_acc(model, dm, T: int) -> tuple[float, float]:
    """(SNN accuracy at step T, folded-ANN accuracy) on the validation subset, method steprelu."""
    from annsnn import convert, simulate
    res = simulate(convert(model.eval(), "steprelu"), dm.val_dataloader(), T, ann=model,
                   progress=False)
    return res.acc[T - 1], res.ann_acc


def open_study(args, storage, name: str, config: dict, seed: int | None = None) -> optuna.Study:
    pruner = optuna.pruners.MedianPruner(n_startup_trials=args.prune_startup, n_warmup_steps=0)
    if args.no_prune:
        pruner = optuna.pruners.NopPruner()
    study = st.create_or_load_study(storage, name, direction="maximize", pruner=pruner,
                                    sampler=optuna.samplers.TPESampler(seed=seed))
    W.check_config(study, config)
    return study


def run_trials(args, storage, name: str, config: dict) -> dict:
    from optuna_integration import PyTorchLightningPruningCallback
    R.set_threads(args)
    worker = W.register(storage, name, args.seed)
    study = open_study(args, storage, name, config, worker.seed)
    dm = subset_datamodule(args.dataset, args.data_dir, args.batch_size, args.train_subset,
                           args.val_subset, args.split_seed)
    arch_kwargs = json.loads(args.arch_kwargs)

    def objective(trial: optuna.Trial) -> float:
        hp = {"theta": trial.suggest_float("theta", *SPACE["theta"], log=True),
              "L": trial.suggest_int("L", *SPACE["L"], log=True),
              "lr": trial.suggest_float("lr", *SPACE["lr"], log=True),
              "weight_decay": trial.suggest_float("weight_decay", *SPACE["weight_decay"], log=True)}
        t0 = time.perf_counter()
        cbs = [] if args.no_prune else [PyTorchLightningPruningCallback(trial, monitor="val_acc")]
        module, trainer = train_once(hp, dm, args.arch, arch_kwargs, args.epochs, args.ddp_cpu, cbs,
                                     seed=args.seed + trial.number)
        if cbs and args.ddp_cpu > 1:
            cbs[0].check_pruned()     # under DDP the ranks only flag the prune; raise it here
        ann_acc = float(trainer.callback_metrics["val_acc"])
        trial.set_user_attr("ann_val_acc", ann_acc)
        trial.set_user_attr("seconds_train", round(time.perf_counter() - t0, 2))
        if args.objective == "ann":
            return ann_acc
        snn_acc, folded = snn_val_acc(module.model, dm, args.T)
        trial.set_user_attr("ann_val_acc_folded", folded)
        trial.set_user_attr(f"snn_val_acc_T{args.T}", snn_acc)
        return snn_acc

    return W.run_worker(study, objective, args.n_trials, finished=FINISHED, poll=args.poll,
                        worker=worker)


def report(args, storage, name: str, config: dict, argv) -> Path:
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    if not complete:
        raise SystemExit(f"study '{name}' has no complete trial yet; nothing to report")
    out = R.out_path(args.out) if args.out else st.PROJECT_ROOT / "results" / args.dataset / "train_hparams"
    out.mkdir(parents=True, exist_ok=True)
    n = W.counts(study, FINISHED)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    what = f"SNN validation accuracy at T = {args.T}" if args.objective == "snn" else "ANN validation accuracy"
    lines = [f"# StepReLU training study `{name}`", "",
             f"- {args.dataset}, {args.arch} {args.arch_kwargs}, {args.epochs} epoch(s) on "
             f"{args.train_subset or 'all'} training images; objective: maximise {what} on "
             f"{args.val_subset or 'all'} validation images (the test split is never used)",
             f"- search: theta in {SPACE['theta']} (log), L in {SPACE['L']} (log), lr in "
             f"{SPACE['lr']} (log), weight decay in {SPACE['weight_decay']} (log); SGD, cosine schedule",
             f"- {n['finished'] - pruned} complete, {pruned} pruned (median rule on the ANN's "
             f"validation accuracy per epoch), {n['fail']} failed; {W.workers_line(study)}; storage "
             f"`{st.public_url(storage)}`" + (f"; DDP on {args.ddp_cpu} CPU processes" if args.ddp_cpu > 1 else ""),
             "", "| rank | trial | value | ANN val acc | theta | L | lr | weight decay |",
             "|---|---|---|---|---|---|---|---|"]
    for i, t in enumerate(complete[:10]):
        p = t.params
        lines.append(f"| {i + 1} | {t.number} | {100 * t.value:.2f} | "
                     f"{100 * t.user_attrs.get('ann_val_acc', float('nan')):.2f} | {p['theta']:.4g} | "
                     f"{p['L']} | {p['lr']:.3g} | {p['weight_decay']:.3g} |")
    if not args.no_mlflow:
        from mlflow.tracking import MlflowClient

        import tracking
        uri = tracking.tracking_uri(args.tracking_uri)
        client = MlflowClient(uri)
        parent = tracking.study_parent_run(client, args.experiment or f"{args.dataset}-studies", name,
                                           "optuna-study", tags={"dataset": args.dataset,
                                                                 "study": "train_hparams",
                                                                 "storage": st.describe(storage)},
                                           params=config,
                                           key=tracking.study_key(name, st.describe(storage), None,
                                                                  [args.objective]))
        n_runs = tracking.log_trials(client, parent, name, trials, ["objective"],
                                     scalar_attrs=("ann_val_acc", "ann_val_acc_folded",
                                                   f"snn_val_acc_T{args.T}", "seconds_train"))
        client.log_metric(parent, "best_value", float(complete[0].value))
        lines += ["", f"MLflow ({uri}): study run `{parent}` with {n_runs} nested trial runs."]
    lines += ["", f"Command: `{PROG} {shlex.join(argv)}`", ""]
    (out / "study.md").write_text("\n".join(lines))
    if not args.no_mlflow:
        client.log_artifact(parent, str(out / "study.md"))
        client.set_terminated(parent)
    print("\n".join(lines))
    print(f"[study] wrote {out / 'study.md'}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--arch", default="cnn-small")
    p.add_argument("--arch-kwargs", default='{"width": 16}', help="JSON (default %(default)s)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=5000, help="training images per epoch (0: all)")
    p.add_argument("--val-subset", type=int, default=1000, help="validation images (0: all)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--objective", choices=("snn", "ann"), default="snn")
    p.add_argument("--T", type=int, default=4, help="SNN time steps for --objective snn (default 4)")
    p.add_argument("--ddp-cpu", type=int, default=0, help="train each trial with DDP on N CPU processes")
    p.add_argument("--no-prune", action="store_true")
    p.add_argument("--prune-startup", type=int, default=3, help="trials before pruning starts")
    p.add_argument("--seed", type=int, default=0,
                   help="training seed (+ trial number) and sampler seed: worker k (numbered by the "
                        "storage) samples with (SEED mod 1000) + 1000 k (default 0)")
    R.add_output_args(p, "results/<dataset>/train_hparams", "<dataset>-studies")
    R.add_common_args(p, default_trials=20)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if min(args.epochs, args.n_trials, args.workers, args.T) < 1:
            raise ValueError("--epochs, --n-trials, --workers and --T must be >= 1")
        json.loads(args.arch_kwargs)
        from lightning_modules.data import build_datamodule
        build_datamodule(args.dataset, data_dir=args.data_dir).prepare_data()  # missing data: here, once
        storage = R.open_storage(args)
        if args.ddp_cpu > 1 and not args.no_prune and st.kind_of(args.storage) == "journal":
            raise ValueError("--ddp-cpu with pruning needs an RDB storage (sqlite:///... or "
                             "postgresql://...): optuna-integration's PyTorchLightningPruningCallback "
                             "supports only RDBStorage under DDP; or pass --no-prune")
    except (ValueError, st.StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if type(e).__name__ != "DataUnavailableError":
            raise
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    config = {"kind": "train_hparams", "dataset": args.dataset, "arch": args.arch,
              "arch_kwargs": args.arch_kwargs, "epochs": args.epochs, "train_subset": args.train_subset,
              "val_subset": args.val_subset, "split_seed": args.split_seed, "objective": args.objective,
              "T": args.T, "space": {k: list(v) for k, v in SPACE.items()}, "batch_size": args.batch_size,
              "ddp_cpu": args.ddp_cpu}
    name = args.study_name or (f"train_hparams-{args.dataset}-{args.arch}-{args.objective}"
                               f"{args.T if args.objective == 'snn' else ''}-e{args.epochs}")
    return R.dispatch(args, argv, "studies.train_hparams", name,
                      open_study=lambda: open_study(args, storage, name, config),
                      run_trials=lambda: run_trials(args, storage, name, config),
                      report=lambda: report(args, storage, name, config, argv))


if __name__ == "__main__":
    sys.exit(main())
