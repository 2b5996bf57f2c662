"""Records grouped and formatted the one way every table of the report uses.

A record is one (method, leak) simulation of one seed (what the SNN callback writes);
figures over seeds are ``bench.stats.spread``.
"""
from __future__ import annotations

from collections import defaultdict

from .. import stats


def fmt(values, scale=100.0, digits=2) -> str:
    return stats.spread([None if v is None else v * scale for v in values], f".{digits}f")


def by_setting(records: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r["leak"])].append(r)
    return groups


def claims_exactness(record: dict) -> bool:
    """Only a method that claims t = 1 exactness gets the identical-predictions count: for
    the rate methods it measures nothing (records from before the flag: steprelu alone)."""
    if "exact_at_t1" in record:
        return bool(record["exact_at_t1"])
    return record["method"] == "steprelu"


def ordered(cfg: dict, records: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """(method, leak) groups in the preset's method order, leak 1 first."""
    order = {m: i for i, m in enumerate(cfg["methods"])}
    return sorted(by_setting(records).items(), key=lambda kv: (order.get(kv[0][0], 99), -kv[0][1]))
