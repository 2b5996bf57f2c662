"""What makes ``--resume`` resume: a checkpoint at the end of every epoch and on SIGTERM,
the random state inside it, and an MLflow logger that logs each (metric, step) once.

- ``epoch_checkpoint``: Lightning's ModelCheckpoint writes ``last.ckpt`` only when it saved
  some other checkpoint in the same step, so ``save_last=True, save_top_k=0`` wrote nothing
  until training ended. Here the top-1 "latest" checkpoint is itself named ``last`` (no
  monitor, so the newest replaces the older one; written atomically by Lightning).
- ``RandomState``: Lightning checkpoints hold no random state; the training loader shuffles
  and augments with torch's global generator, so without it a resumed run would train on
  another order than an uninterrupted one.
- ``Preemption``: on SIGTERM (SLURM preemption) Lightning stops at the next batch; this
  writes ``last.ckpt`` there. A mid-epoch checkpoint resumes where it stopped, but the rest
  of that epoch then draws a fresh order (Lightning restarts the loader), so only a resume
  from an epoch's end reproduces an uninterrupted run exactly.
- ``OnceMLFlowLogger``: steps already in the run (logged before an interruption, or a
  second time in one step, as Lightning does with ``epoch``) are not logged again.

Test hook (tests/test_resume.py, test_run_lock.py): ``ANNSNN_TEST_SIGNAL=KILL@E:B`` (or TERM, STOP)
makes the process send itself that signal before batch B of epoch E (both from 0);
``KILL@E:val`` once epoch E's validation metrics are logged, before its checkpoint.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

TEST_SIGNAL_ENV = "ANNSNN_TEST_SIGNAL"


def epoch_checkpoint(path: Path) -> ModelCheckpoint:
    """Writes ``path`` (``.../last.ckpt``) at the end of every training epoch."""
    path = Path(path)
    return ModelCheckpoint(dirpath=path.parent, filename=path.stem, save_top_k=1, monitor=None,
                           every_n_epochs=1, save_last=False, enable_version_counter=False)


class RandomState(L.Callback):
    """Saves torch's, numpy's and Python's random state in every checkpoint and restores it
    (as tensors, ints and strings: what ``torch.load(weights_only=True)`` reads)."""

    def state_dict(self):
        s = _collect_rng_states(include_cuda=True)
        name, keys, pos, has_gauss, gauss = s["numpy"]
        s["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
        return s

    def load_state_dict(self, state_dict):
        s = dict(state_dict)
        name, keys, pos, has_gauss, gauss = s["numpy"]
        s["numpy"] = (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
        _set_rng_states(s)


class Preemption(L.Callback):
    """After each epoch's checkpoint ``on_epoch(trainer)`` (the state file's wall time); on
    SIGTERM a checkpoint at ``path`` where training stopped."""

    def __init__(self, path: Path, on_epoch: Callable | None = None):
        self.path, self.on_epoch = Path(path), on_epoch
        self.preempted = False

    def on_train_epoch_end(self, trainer, pl_module):
        if self.on_epoch and trainer.is_global_zero:
            self.on_epoch(trainer)

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, SIGTERMException):
            self.preempted = True
            trainer.save_checkpoint(self.path)


class SignalAt(L.Callback):
    """Test hook: send this process ``sig`` before batch ``where`` of epoch ``epoch``, or
    with ``where == "val"`` once that epoch's validation metrics are logged (before the
    epoch's checkpoint: the hardest case for logging each step once)."""

    def __init__(self, spec: str):
        name, _, at = spec.partition("@")
        epoch, _, where = at.partition(":")
        self.sig = getattr(signal, f"SIG{name.upper()}")
        self.epoch, self.where = int(epoch), where or "0"

    def _fire(self, trainer, where: str):
        if trainer.current_epoch == self.epoch and where == self.where:
            os.kill(os.getpid(), self.sig)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._fire(trainer, str(batch_idx))

    def on_validation_end(self, trainer, pl_module):
        self._fire(trainer, "val")


def signal_hooks() -> list[L.Callback]:
    """The test hook's callback when $ANNSNN_TEST_SIGNAL asks for one, else none."""
    spec = os.environ.get(TEST_SIGNAL_ENV)
    return [SignalAt(spec)] if spec else []


class OnceMLFlowLogger(MLFlowLogger):
    """MLFlowLogger that logs each (key, step) of its run once: what the run already holds
    (an interrupted segment) is read once, at the first log call."""

    _seen: set | None = None

    def _logged(self) -> set:
        if self._seen is None:
            client, run_id = self.experiment, self.run_id
            keys = client.get_run(run_id).data.metrics
            self._seen = {(k, m.step) for k in keys for m in client.get_metric_history(run_id, k)}
        return self._seen

    @rank_zero_only
    def log_metrics(self, metrics, step=None):
        seen, step = self._logged(), step or 0   # MLflow stores step None as 0
        fresh = {k: v for k, v in metrics.items() if (k, step) not in seen}
        seen.update((k, step) for k in fresh)
        if fresh:
            super().log_metrics(fresh, step)
