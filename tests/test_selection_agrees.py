"""A committed selection (results/<preset>/selection.json, python -m bench select) and its
preset agree: the preset runs the candidate that was chosen on validation, knob by knob."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import presets

RESULTS = Path(__file__).resolve().parents[1] / "results"
SELECTIONS = sorted(RESULTS.glob("*/selection.json"))


def disagreements(cfg: dict, selection: dict) -> list[str]:
    """Each chosen knob the preset's ``activations`` sets otherwise."""
    out = []
    for act, label in selection["chosen"].items():
        cand = next(c for c in selection["candidates"] if c["activation"] == act and c["label"] == label)
        for knob, value in cand["knobs"].items():
            have = cfg["activations"].get(act, {}).get(knob)
            if have != value:
                out.append(f"{act}.{knob}: preset {have!r}, chosen {value!r} ({label})")
    return out


@pytest.mark.parametrize("path", SELECTIONS, ids=[p.parent.name for p in SELECTIONS])
def test_the_preset_runs_what_its_selection_chose(path):
    sel = json.loads(path.read_text())
    assert not disagreements(presets.load(path.parent.name), sel)


def test_smoke_runs_the_reference_selection():
    """smoke is one more seed of fashion-mnist-reference: it must run the same chosen settings."""
    sel = json.loads((RESULTS / "fashion-mnist-reference" / "selection.json").read_text())
    assert not disagreements(presets.load("smoke"), sel)


def test_a_preset_that_runs_another_candidate_is_caught():
    sel = json.loads((RESULTS / "fashion-mnist-reference" / "selection.json").read_text())
    other = next(c for c in sel["candidates"] if c["activation"] == "qcfs" and c["label"] != sel["chosen"]["qcfs"])
    cfg = presets.load("fashion-mnist-reference", [f"activations.qcfs.L={other['knobs']['L']}"])
    assert disagreements(cfg, sel) and disagreements(cfg, sel)[0].startswith("qcfs.L")
