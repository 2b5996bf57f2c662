"""Operating point, sub-step latency and energy conventions of the summary (bench/costs.py),
and the identical-at-t=1 column shown only for methods that claim exactness."""
from __future__ import annotations

import pytest

from bench import costs
from bench.report import summary, tables


def _record(method="qcfs", acc=(0.50, 0.88, 0.897, 0.91), ann=0.90, exact=False, **kw):
    T = len(acc)
    r = {"method": method, "leak": 1.0, "T_max": T, "n_images": 100, "acc": list(acc),
         "ann_acc": ann, "ann_acc_unfolded": ann, "conv_error": [0.5] * T,
         "identical_at_t1": 40, "exact_at_t1": exact, "max_spikes_per_step": 1,
         "first_layer_macs": 100.0, "ann_macs": 1000.0, "sops": [50.0 * t for t in range(1, T + 1)],
         "ops_ratio": [0.1 * t for t in range(1, T + 1)],
         "energy_ratio": [0.2 * t for t in range(1, T + 1)], "max_n_per_layer": {"a": 3, "b": 1}}
    r.update(kw)
    # the operating point is chosen on validation: here a validation curve like the test one
    r.setdefault("val_acc", list(r["acc"]))
    r.setdefault("val_ann_acc", r["ann_acc"])
    return r


def test_operating_point_is_the_first_t_within_the_gap():
    r = _record(acc=(0.50, 0.88, 0.893, 0.91))   # ANN 0.90
    assert costs.operating_t(r, 1.0) == 3        # 0.893 >= 0.89; 0.88 is not
    assert costs.operating_t(r, 0.5) == 4        # 0.893 < 0.895
    assert costs.operating_t(_record(acc=(0.1, 0.2)), 1.0) is None


def test_substeps_and_static_input_energy():
    r = _record()
    assert costs.substeps(r, 2) == (6, 8)        # t x max n = 2 x 3; t x (3 + 1)
    # first layer once: (4.6 x 100 + 0.9 x sops[t]) / (4.6 x 1000)
    assert costs.energy_static_input(r, 2) == pytest.approx((4.6 * 100 + 0.9 * 100) / 4600)


def test_operating_point_table_reads_costs_at_that_t():
    table = tables.operating_point_table([(("qcfs", 1.0), [_record()])])
    row = next(line for line in table.splitlines() if "| 1 pt |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:8] == ["3", "89.70", "0.300", "0.600",
                          f"{(4.6 * 100 + 0.9 * 150) / 4600:.3f}"]
    assert cells[8:] == ["9", "12"]


def test_identical_column_only_for_methods_that_claim_exactness():
    cfg = {"summary_t": [1], "T_max": 4, "methods": ["qcfs", "steprelu"]}
    table = summary.summary_table(cfg, [_record(), _record("steprelu", exact=True)])
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert rows["qcfs"].rstrip(" |").endswith("-")
    assert rows["steprelu"].rstrip(" |").endswith("40/100")
    assert [line for line in summary.exactness_lines([_record(), _record("steprelu", exact=True)])] \
        == ["- steprelu (seed 0, leak 1): identical predictions: 40/100 at t = 1"]


def test_operating_point_is_chosen_on_validation_not_test():
    """Changing only the test labels (so the test curve) must not move the operating point;
    changing the validation curve does."""
    from bench import costs
    rec = {"acc": [0.10, 0.50, 0.89, 0.90], "ann_acc": 0.90,
           "val_acc": [0.10, 0.40, 0.80, 0.895], "val_ann_acc": 0.90, "T_max": 4}
    assert costs.operating_t(rec, 1.0) == 4
    relabelled = dict(rec, acc=[0.95, 0.95, 0.95, 0.95], ann_acc=0.10)    # test split only
    assert costs.operating_t(relabelled, 1.0) == 4
    assert costs.operating_t(dict(rec, val_acc=[0.9, 0.9, 0.9, 0.9]), 1.0) == 1
    assert costs.operating_t({"acc": rec["acc"], "ann_acc": 0.9, "T_max": 4}, 1.0) is None   # no validation curve
