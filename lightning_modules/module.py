"""One LightningModule that trains any ``annsnn.models.build`` network with any activation.

Every knob comes from the preset and is saved as a hyperparameter, so a checkpoint
rebuilds its own network (``ANNClassifier.load_from_checkpoint``).
"""
from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

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
        self.save_hyperparameters()
        self.model = build(arch, activation, num_classes, in_channels, image_size,
                           mean=list(mean), std=list(std), **(arch_kwargs or {}))
        if channels_last:  # NHWC: faster convolutions on this CPU (bf16 and fp32)
            self.model.to(memory_format=torch.channels_last)
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, x):
        return self.model(x)

    def _step(self, batch, stage: str):
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=on_step, sync_dist=True)
        self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
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
        # ranges that the activation's quantisation depends on.
        decay = [p for p in self.parameters() if p.ndim > 1]
        no_decay = [p for p in self.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": hp.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov)
        else:
            opt = torch.optim.AdamW(groups, lr=hp.lr)
        if hp.schedule == "none":
            return opt
        steps = self.trainer.estimated_stepping_batches
        if hp.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=hp.lr, total_steps=steps,
                pct_start=min(max(hp.warmup_epochs / max(hp.epochs, 1), 0.05), 0.5))
        else:
            warm = int(steps * hp.warmup_epochs / max(hp.epochs, 1))

            def cosine(step):
                if step < warm:
                    return (step + 1) / warm
                return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(steps - warm, 1)))
            sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
