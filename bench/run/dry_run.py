"""``python -m bench run --preset P --dry-run``: a preset end to end on a few batches, on CPU.

Why: the paper presets are written for GPUs and days of training, so a typo in one
would otherwise surface only after a queue wait on a cluster. The dry run takes the
real code path (same model, data pipeline, augmentation, callbacks, MLflow logging,
robustness stage) and only shrinks the amounts: 2 training and 2 validation batches
of one epoch, then conversion with every method the preset lists and 2 evaluation
batches at T = 2 (robustness, where enabled, on 4 images at T <= 2, each noise and attack
kind at the preset's first level).

It is nothing but ``--set`` overrides, applied before the user's own, so a dry run can
still be changed, e.g. under DDP with two CPU processes:

    python -m bench run --preset paper-cifar10-resnet20 --dry-run --data-dir DIR \\
        --set trainer.devices=2 --set trainer.strategy=ddp

The data must exist (``--data-dir``); ``tests/fakedata.py`` writes tiny fakes in the
real formats. Outputs go where a normal run's go: pass ``--out``, ``--tracking-uri``
and ANNSNN_RUNS_DIR to keep them out of the project.
"""
from __future__ import annotations

OVERRIDES: list[str] = [
    "seeds=[0]",
    "train.epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.num_nodes=1",
    "trainer.strategy=auto",
    "trainer.precision=32-true",
    "trainer.threads=1",      # batches of 2: more threads only wait on each other
    "batch_size=2",
    "eval_batch_size=2",
    "num_workers=1",          # still through a worker process, as on a GPU machine
    "calib_size=4",
    "test_subset=4",          # 2 evaluation batches
    "val_subset=4",           # and 2 of validation for the operating points (a preset's 2000 took minutes)
    "T_max=2",
    "summary_t=[1,2]",
    "eval_every_k_epochs=0",
]
# Robustness settings with a fixed dry-run value; every other robustness list (noise
# levels and modes, attack budgets, leaks) keeps only its first value, so each kind runs once.
ROBUSTNESS = {"test_subset": "4", "noise_images": "4", "transfer_images": "2", "snn_attack_images": "2",
              "leak_images": "4", "sanity_images": "0", "T_max": "2", "T_fixed": "[1]",
              "pgd_steps": "1", "pgd_restarts": "1", "snn_pgd_steps": "1", "snn_pgd_restarts": "1"}


def overrides(cfg: dict) -> list[str]:
    """The ``--set`` assignments that make a run of the loaded preset ``cfg`` a dry run
    (the user's own ``--set`` come after them)."""
    sets = list(OVERRIDES)
    for key, value in cfg.get("robustness", {}).items():
        if key in ROBUSTNESS:
            sets.append(f"robustness.{key}={ROBUSTNESS[key]}")
        elif isinstance(value, list) and len(value) > 1:
            sets.append(f"robustness.{key}=[{value[0]!r}]")
    return sets
