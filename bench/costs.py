"""Operating points and their costs (docs/method.md#operating-point).

A method's operating point is the first t at which its SNN comes within 1.0 (and 0.5)
points of its own source ANN **on the validation split**; the test split only reports the
accuracy and the costs there. Costs are read at the operating point, not at T_max, because
that is where a user of the method would stop. Everything here is computed from the run's
records (results.json), so ``python -m bench report`` re-renders it without new numbers.

Binary sub-steps: a neuron that may send n > 1 spikes in one step needs n binary
sub-steps (or a graded message) on spike-only hardware, so t steps cost t x the largest
n a layer actually used; layers that run in sequence add up (sum over layers).
"""
from __future__ import annotations

import numpy as np

from annsnn.metrics import E_AC_PJ, E_MAC_PJ

from .stats import spread

GAPS = (1.0, 0.5)   # points of accuracy below the source ANN that count as "reached"


def first_within(acc: list[float], ann_acc: float | None, gap_points: float) -> int | None:
    """First t (1-based) with acc[t] >= ann_acc - gap, or None when the curve never gets there."""
    if ann_acc is None or acc is None:
        return None
    for t, a in enumerate(acc, start=1):
        if a >= ann_acc - gap_points / 100.0:
            return t
    return None


def operating_t(record: dict, gap_points: float) -> int | None:
    """The operating point, chosen on the validation split: the first t at which the SNN's
    validation accuracy is within ``gap_points`` of its folded ANN's validation accuracy.
    None when T_max never gets there, or for a record without a validation curve (runs from
    before validation was simulated: no choice is read off the test split)."""
    return first_within(record.get("val_acc"), record.get("val_ann_acc"), gap_points)


def energy_static_input(record: dict, t: int) -> float:
    """Energy over t steps / ANN energy when the first layer's analog MACs are paid once
    per image (its input, the static image, is the same at every step)."""
    snn = E_MAC_PJ * record["first_layer_macs"] + E_AC_PJ * record["sops"][t - 1]
    return snn / (E_MAC_PJ * record["ann_macs"])


def substeps(record: dict, t: int) -> tuple[int, int] | None:
    """(t x largest n used in any layer, t x sum over layers of each layer's largest n)."""
    per_layer = record.get("max_n_per_layer")
    if not per_layer:
        return None
    ns = [max(int(n), 1) for n in per_layer.values()]
    return t * max(ns), t * sum(ns)
