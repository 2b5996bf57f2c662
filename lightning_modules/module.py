"""One LightningModule that trains any ``annsnn.models.build`` network with any activation.

Every knob comes from the preset and is saved as a hyperparameter, so a checkpoint
rebuilds its own network (``ANNClassifier.load_from_checkpoint``).
"""
from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, OneCycleLR, SequentialLR
from torchmetrics.classification import MulticlassAccuracy

from annsnn.models import build

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "onecycle", "none")


class ANNClassifier(L.LightningModule):
    def __init__(self, arch: str, activation: dict, num_classes: int, in_channels: int,
                 image_size: int, mean, std, arch_kwargs: dict | None = None,
                 optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
                 nesterov: bool = True, weight_decay: float = 5e-4, schedule: str = "cosine",
                 epochs: int = 10, label_smoothing: float = 0.0, warmup_epochs: float = 0.0,
                 channels_last: bool = False):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        self.save_hyperparameters(logger=False)  # one name per knob: the runner logs the preset's
        self.model = build(arch, activation, num_classes, in_channels, image_size,
                           mean=list(mean), std=list(std), **(arch_kwargs or {}))
        if channels_last:  # NHWC: faster convolutions on this CPU (bf16 and fp32)
            self.model.to(memory_format=torch.channels_last)
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # one metric per stage: torchmetrics counts correct/total (synced across DDP ranks)
        # and resets at each epoch's end; its state is not saved in checkpoints.
        self.train_acc, self.val_acc, self.test_acc = (
            MulticlassAccuracy(num_classes, average="micro") for _ in range(3))

    def forward(self, x):
        return self.model(x)

    def _step(self, batch, stage: str):
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        acc = getattr(self, f"{stage}_acc")
        acc(logits, y)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=on_step, sync_dist=True)
        self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        hp = self.hparams
        # No weight decay on biases, BatchNorm and thresholds: decay there only shrinks
        # ranges that the activation's quantisation depends on. Except where the
        # activation's own method trains its threshold with decay (QCFS, as Bu et al.'s code).
        decayed_thresholds = {id(p) for m in self.modules() if getattr(m, "decay_threshold", False)
                              for p in m.parameters(recurse=False)}
        decay = [p for p in self.parameters() if p.ndim > 1 or id(p) in decayed_thresholds]
        no_decay = [p for p in self.parameters() if p.ndim <= 1 and id(p) not in decayed_thresholds]
        groups = [{"params": decay, "weight_decay": hp.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov)
        else:
            opt = torch.optim.AdamW(groups, lr=hp.lr)
        if hp.schedule == "none":
            return opt
        sched = lr_schedule(opt, hp.schedule, self.trainer.estimated_stepping_batches, hp.lr,
                            hp.warmup_epochs, hp.epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def lr_schedule(opt, schedule: str, steps: int, lr: float, warmup_epochs: float, epochs: int):
    """The per-step schedule. ``onecycle``: OneCycleLR, warm-up share warmup_epochs/epochs
    in [0.05, 0.5]. ``cosine``: a linear warm-up over the first
    ``warm = int(steps * warmup_epochs / epochs)`` steps, lr * (s + 1) / warm at step s,
    then lr * (1 + cos(pi * (s - warm) / (steps - warm))) / 2.

    torch steps these in a chained (multiplicative) form that differs from the closed form
    by up to 5e-14 relative in float64. SGD applies lr as a float32 scalar, and there the
    two agree at every step (measured: each preset's step count, and 444k steps of random
    lr, length and warm-up), so the trained weights are those of the closed form."""
    if schedule == "onecycle":
        # OneCycleLR divides by its warm-up length in steps, which is 0 for a run of a few
        # steps (a dry run trains 2 batches); such a run follows the first steps of a
        # 10-step cycle instead. Every real run has far more steps, so it is unchanged.
        return OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 10),
                          pct_start=min(max(warmup_epochs / max(epochs, 1), 0.05), 0.5))
    warm = int(steps * warmup_epochs / max(epochs, 1))
    cosine = CosineAnnealingLR(opt, T_max=max(steps - warm, 1))
    if not warm:
        return cosine
    linear = LinearLR(opt, start_factor=1 / warm, end_factor=1.0, total_iters=warm - 1)
    return SequentialLR(opt, [linear, cosine], milestones=[warm])
