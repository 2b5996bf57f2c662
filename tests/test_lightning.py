"""The Lightning layer: learning-rate schedules value by value, the SNN callback's
every-k-epochs evaluation, its rank-0-only conversion and that it leaves the model's mode alone.

Everything runs on random tensors with a tiny cnn-small, in tmp_path (nothing is written
into the repository).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

import lightning_modules.callbacks as cb
from annsnn import QCFS, StepReLU
from lightning_modules.module import ANNClassifier, lr_schedule

ACT = {"name": "steprelu", "theta": 0.1, "L": 4}
N_TRAIN, BATCH = 40, 8  # 5 optimizer steps per epoch


class TinyData(L.LightningDataModule):
    """Random 1x8x8 images, 3 classes; the loaders the callback asks for."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(N_TRAIN, 1, 8, 8, generator=g)
        self.y = torch.randint(0, 3, (N_TRAIN,), generator=g)

    def _loader(self, n=N_TRAIN):
        return DataLoader(TensorDataset(self.x[:n], self.y[:n]), batch_size=BATCH)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader(16)

    def test_dataloader(self):
        return self._loader(16)

    def calib_dataloader(self):
        return self._loader(16)


def tiny_module(**train) -> ANNClassifier:
    return ANNClassifier(arch="cnn-small", activation=ACT, num_classes=3, in_channels=1, image_size=8,
                         mean=[0.5], std=[0.25], arch_kwargs={"width": 4}, **train)


class Capture(Logger):
    """Keeps every ``log_metrics`` call in memory."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []

    name, version = "capture", "0"

    def log_metrics(self, metrics, step=None):
        self.rows.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def fit(module, tmp_path, epochs, callbacks=(), logger=False):
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=logger,
                        callbacks=list(callbacks), default_root_dir=tmp_path, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        log_every_n_steps=1)
    trainer.fit(module, datamodule=TinyData())
    return trainer


# ----------------------------------------------------------------------------- schedules

def cosine_closed_form(lr, steps, warm, s):
    if s < warm:
        return lr * (s + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(steps - warm, 1)))


def onecycle_closed_form(lr, steps, pct, s):
    """Smith's one-cycle with torch's defaults: lr/25 -> lr (cosine) over pct of the steps,
    then -> lr/25/1e4 (cosine)."""
    start, low = lr / 25, lr / 25 / 1e4
    peak = pct * steps - 1
    if s <= peak:
        return start + (lr - start) * (1 - math.cos(math.pi * s / peak)) / 2
    return lr + (low - lr) * (1 - math.cos(math.pi * (s - peak) / (steps - 1 - peak))) / 2


def assert_same_lr(got, want):
    """SGD applies lr as a float32 scalar: equal there means identical training. The float64
    values may differ in the last bits (torch steps a chained form)."""
    got, want = np.asarray(got), np.asarray(want)
    assert len(got) == len(want)
    bad = np.flatnonzero(got.astype(np.float32) != want.astype(np.float32))
    assert not len(bad), f"lr differs at steps {bad[:10]}: {got[bad[:3]]} vs {want[bad[:3]]}"


@pytest.mark.parametrize("steps,warmup_epochs,epochs", [(1266, 0.0, 3), (1266, 0.5, 3), (300, 1.0, 100),
                                                         (3000, 2.0, 15)])
def test_cosine_schedule_matches_closed_form_at_every_step(steps, warmup_epochs, epochs):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sched = lr_schedule(opt, "cosine", steps, 0.1, warmup_epochs, epochs)
    warm = int(steps * warmup_epochs / epochs)
    got = []
    for _ in range(steps):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert_same_lr(got, [cosine_closed_form(0.1, steps, warm, s) for s in range(steps)])


@pytest.mark.parametrize("schedule,warmup_epochs", [("cosine", 0.0), ("cosine", 1.0), ("onecycle", 1.0)])
def test_trained_lr_follows_closed_form_at_every_step(tmp_path, schedule, warmup_epochs):
    """Through Lightning: the scheduler is stepped once per optimizer step, from step 0."""
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    epochs, lr = 4, 0.2
    fit(tiny_module(lr=lr, epochs=epochs, schedule=schedule, warmup_epochs=warmup_epochs),
        tmp_path, epochs, [Record()])
    steps = epochs * N_TRAIN // BATCH
    warm = int(steps * warmup_epochs / epochs)
    if schedule == "cosine":
        want = [cosine_closed_form(lr, steps, warm, s) for s in range(steps)]
    else:
        want = [onecycle_closed_form(lr, steps, warmup_epochs / epochs, s) for s in range(steps)]
    assert_same_lr(seen, want)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_onecycle_of_a_few_steps_runs(steps):
    """A dry run trains 2 batches: OneCycleLR of so few steps divided by a zero-length warm-up."""
    from lightning_modules.module import lr_schedule
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = lr_schedule(opt, "onecycle", steps, 0.2, 1.8, 1)   # a dry run: 1 epoch
    for _ in range(steps):
        opt.step()
        sched.step()
    assert all(0 < g["lr"] <= 0.2 for g in opt.param_groups)


# ----------------------------------------------------------------------------- metrics

def test_epoch_accuracy_is_correct_over_all_images(tmp_path):
    """val_acc is correct/total over the whole split (torchmetrics), not a mean of batch means."""
    module = tiny_module(epochs=1)
    trainer = fit(module, tmp_path, 1)
    dm = TinyData()
    module.eval()
    with torch.no_grad():
        correct = sum(int((module(x).argmax(1) == y).sum()) for x, y in dm.val_dataloader())
    assert float(trainer.callback_metrics["val_acc"]) == pytest.approx(correct / 16, abs=1e-7)


# ----------------------------------------------------------------------------- SNN callback

def test_snn_evaluated_every_k_epochs_only(tmp_path, monkeypatch):
    calls = []
    real = cb.simulate

    def spy(snn, loader, T_max, **kw):
        # during training: validation without the ANN; at the end: test, then the validation
        # subset that chooses the operating point, both beside the ANN
        calls.append("epoch" if kw.get("ann") is None else
                     "final-val" if "(validation)" in kw.get("desc", "") else "final-test")
        return real(snn, loader, T_max, **kw)
    monkeypatch.setattr(cb, "simulate", spy)
    logger = Capture()
    snn_cb = cb.SNNEvaluation(["steprelu"], T_max=2, eval_every_k_epochs=2, progress=False)
    fit(tiny_module(epochs=5), tmp_path, 5, [snn_cb], logger)
    key = "val_snn_acc_T2/steprelu"
    epochs = [row["epoch"] for row in logger.rows if key in row]
    assert epochs == [1, 3], f"SNN logged at epochs {epochs}; expected after epochs 2 and 4 (0-based 1, 3)"
    assert calls == ["epoch", "epoch", "final-test", "final-val"]
    assert len(snn_cb.records) == 1 and snn_cb.records[0]["T_max"] == 2


def _mixed_mode(module):
    """Train mode with one submodule in eval: a mode no blanket ``.train(flag)`` restores."""
    module.train()
    next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()
    return [m.training for m in module.modules()]


def test_evaluate_leaves_model_mode_unchanged():
    dm = TinyData()
    model = tiny_module().model
    before = _mixed_mode(model)
    recs = cb.SNNEvaluation(["steprelu"], T_max=2, progress=False).evaluate(model, dm)
    assert [m.training for m in model.modules()] == before
    assert len(recs) == 1 and recs[0]["identical_at_t1"] == recs[0]["n_images"] == 16


def test_validation_epoch_end_converts_on_rank_zero_only_and_keeps_mode(monkeypatch):
    dm = TinyData()
    module = tiny_module()
    logged = {}
    module.log = lambda name, value, **kw: logged.setdefault(name, value)
    snn_cb = cb.SNNEvaluation(["steprelu"], T_max=2, eval_every_k_epochs=1, progress=False)
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, is_global_zero=False, datamodule=dm)

    def no_convert(*a, **k):
        raise AssertionError("converted on a rank other than 0")
    monkeypatch.setattr(cb, "convert", no_convert)
    snn_cb.on_validation_epoch_end(trainer, module)
    assert not logged

    monkeypatch.undo()
    trainer.is_global_zero = True
    before = _mixed_mode(module)
    snn_cb.on_validation_epoch_end(trainer, module)
    assert [m.training for m in module.modules()] == before
    assert 0.0 <= logged["val_snn_acc_T2/steprelu"] <= 1.0


@pytest.mark.parametrize("act, lam_decayed", [({"name": "qcfs", "L": 4, "init_lam": 8.0}, True),
                                              ({"name": "steprelu", "learn_theta": True}, False)])
def test_weight_decay_groups(act, lam_decayed):
    """Weights decay; BatchNorm, biases and thresholds do not, except QCFS's lam_q, which
    Bu et al.'s code trains with the weights' decay."""
    m = ANNClassifier(arch="cnn-small", activation=act, num_classes=10, in_channels=1,
                      image_size=28, mean=[0.5], std=[0.5], arch_kwargs={"width": 4},
                      schedule="none", weight_decay=5e-4)
    opt = m.configure_optimizers()
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 5e-4 for p in g["params"]}
    thresholds = [p for mod in m.modules() if isinstance(mod, (QCFS, StepReLU))
                  for p in mod.parameters(recurse=False)]
    assert len(thresholds) == 3
    assert all((id(p) in decayed) == lam_decayed for p in thresholds)
    bn = [p for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d) for p in mod.parameters()]
    assert bn and not any(id(p) in decayed for p in bn)
    convs = [mod.weight for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert convs and all(id(p) in decayed for p in convs)


# ----------------------------------------------------------------------------- what MLflow shows

FIVE = ("maxnorm", "robustnorm", "opi", "qcfs", "steprelu")
KNOBS = {"relu": {}, "qcfs": {"L": 4, "init_lam": 8.0}, "steprelu": {"theta": 0.1, "L": 4, "phi": 0.0}}


def test_mlflow_runs_one_name_per_knob_no_duplicates_layers_named_and_all_methods_compared(tmp_path):
    """Three ANN runs (relu, qcfs, steprelu) of one seed, evaluated as the bench does: the
    experiment's compare-seed0 run holds every method's curve; params use only the preset's
    key per knob; no metric repeats another; firing rates are named by layer."""
    import tracking
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path}/ui.db")
    exp = tracking.get_or_create_experiment(client, "ui")
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    cfg = {"name": "ui", "dataset": "random", "arch": "cnn-small", "arch_kwargs": {"width": 4},
           "activations": KNOBS, "train": {"lr": 0.1, "epochs": 1}, "T_max": 4}
    dm = TinyData()
    for act in KNOBS:
        parent = client.create_run(exp, run_name=f"cnn-small-{act}-seed0", tags={"seed": "0"}).info.run_id
        params = tracking.run_params(cfg, 0, act)
        tracking.log_params(client, parent, params)
        ann = ANNClassifier(arch="cnn-small", activation={"name": act, **KNOBS[act]}, num_classes=3,
                            in_channels=1, image_size=8, mean=[0.5], std=[0.25],
                            arch_kwargs={"width": 4}).model.eval()
        methods = [m for m in FIVE if cb.get_recipe(m).activation == act]
        cb.SNNEvaluation(methods, 4, params=params, progress=False).evaluate(ann, dm, client, parent)
    runs = client.search_runs([exp], max_results=100)
    cmp_runs = [r for r in runs if r.data.tags.get("kind") == "comparison"]
    assert [r.info.run_name for r in cmp_runs] == ["compare-seed0"]     # rebuilt, never piled up
    cmp = cmp_runs[0]
    for m in FIVE:
        hist = client.get_metric_history(cmp.info.run_id, f"snn_acc/{m}-leak1")
        assert sorted(h.step for h in hist) == [1, 2, 3, 4], m               # each step once
    assert "comparison.png" in [a.path for a in client.list_artifacts(cmp.info.run_id)]
    kids = [r for r in runs if r.data.tags.get("kind") == "snn"]
    assert sorted(r.data.tags["method"] for r in kids) == sorted(FIVE)
    for r in runs:
        keys = set(r.data.params)
        assert not any(k.startswith(("activation_knobs", "activation/")) for k in keys), keys
        if r.data.params.get("activation") == "steprelu":
            assert {"activations.steprelu.theta", "activations.steprelu.L"} <= keys
            assert not any(k.startswith(("activations.relu", "activations.qcfs")) for k in keys)
    for r in kids:
        ms = set(r.data.metrics)
        assert {"snn_acc", "energy_ratio", "sops_per_image"} <= ms
        assert not {f"{c}_T" for c in ("snn_acc", "energy_ratio", "sops_per_image")} & ms, ms
        rates = sorted(k for k in ms if k.startswith("firing_rate"))
        assert rates and all(k.startswith("firing_rate/") for k in rates), rates
        assert not any(k.split("/", 1)[1].replace(".", "").isdigit() for k in rates), rates
        assert "firing_rate/conv1" in rates and "firing_rate/fc1" in rates, rates


def test_layer_names_follow_the_layer_not_the_index():
    from annsnn import convert
    ann = tiny_module().model.eval()
    snn = convert(ann, "steprelu", TinyData().calib_dataloader())
    names = cb.layer_names(snn)
    assert list(names.values()) == ["conv1", "conv2", "fc1"], names
