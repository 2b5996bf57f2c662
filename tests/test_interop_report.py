"""The interop stage's record on the report's side, without the interop extra: interop.json
read beside the seeds, rendered as interop.md and as a section of summary.md (the summary of
a run without it is unchanged), and written again by ``bench report``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.report import interop_page, pages, seeds, summary

ROOT = Path(__file__).resolve().parents[1]


def _method(method, status, op, nodes=12, n=100, differs=0):
    ts = sorted({1, 4, 32} | ({op} if op else set()))
    entry = {"method": method, "leak": 1.0, "leak_mode": "exp", "activation": "relu", "operating_t": op,
             "export": {"status": status, "why": None, "file": f"{method}-leak1.nir", "nodes": nodes},
             "roundtrip": {"T": 32, "n_images": n, "ts": [1, 4, 32],
                           "identical": {str(t): n - (differs if t == 1 else 0) for t in ts},
                           "identical_all_t": n - differs, "spike_cells_equal": 9586, "spike_cells": 9600,
                           "first_mismatch": None, "repairs": []},
             "neurobench": {str(t): {"effective_macs": 26896.0 * t, "effective_acs": 1000.5 * t,
                                     "dense": 99999.0 * t, "activation_sparsity": 0.9 - 0.001 * t,
                                     "footprint_bytes": 207740, "connection_sparsity": 0.0,
                                     "accuracy": 0.5} for t in ts},
             "neurobench_error": None,
             "suite": {str(t): {"first_layer_macs": 28224.0 * t, "sops": 1100.25 * t} for t in ts},
             "same_as_records": {"images": 100, "t_max": 32, "agree": 100}, "mlflow_run_id": None}
    if status == "refused":
        entry["export"] = {"status": "refused", "file": None, "nodes": None,
                           "why": "layer '3' emits up to 20 spikes per step: NIR's neurons (IF, LIF) emit "
                                  "at most one spike per step"}
        entry["roundtrip"] = None
    return entry


def interop_data() -> dict:
    return {"preset": "smoke", "seed": 5, "commit": "abc1234", "date_utc": "2026-12-02T00:00:00Z",
            "versions": {"nir": "1.0.8", "nirtorch": "2.6", "snntorch": "1.0.0", "neurobench": "2.3.0",
                         "torch": "2.14.1"},
            "machine": {"cpu_model": "Some CPU", "kernel_flags": ["avx2"], "cpus": 2, "threads": 2},
            "images": 100, "neurobench_images": 40, "batch_size": 20, "ts": [1, 4, 32], "wall_seconds": 12.0,
            "methods": [_method("maxnorm", "verified", 7), _method("opi", "differs", None, differs=2),
                        _method("steprelu", "refused", 1)]}


def test_the_section_says_per_method_what_happened_and_shows_neurobench(tmp_path):
    data = interop_data()
    text = interop_page.section(data)
    lines = [ln for ln in text.splitlines() if ln.startswith("- ")]
    assert lines[0].startswith("- `maxnorm` (leak 1): exported and verified in snnTorch 1.0.0 (12 NIR nodes): "
                               "identical predictions on 100/100 at t = 1, 100/100 at t = 4, 100/100 at t = 32, "
                               "100/100 at the operating point t = 7 (100/100 at every t <= 32); spike counts "
                               "equal in 9,586 of 9,600 (image, layer, step) cells.")
    assert "but snnTorch 1.0.0 differs: identical predictions on 98/100 at t = 1" in lines[1]
    assert "no operating point" in lines[1]
    assert lines[2].startswith("- `steprelu` (leak 1): not exported: layer '3' emits up to 20 spikes per step")
    rows = [ln.split(" | ")[:3] for ln in text.splitlines() if ln.startswith("| maxnorm |")]
    assert [r[2] for r in rows] == ["7 (operating point)", "1", "4", "32"]
    assert "| steprelu | 1 | 1 (operating point) | 26,896 | 28,224 | 1,000 | 1,100 | 0.8990 | 207,740 | 0.0000 |" in text
    assert "(../../docs/interop.md#neurobench-metrics)" in text and "**effective ACs**" in text
    assert "first 40 test images (batches of 20)" in text


def test_the_summary_gains_the_section_only_with_interop_data():
    run = seeds.load(ROOT / "results" / "smoke")
    plain = summary.render(run.cfg, run.records, run.manifest)
    assert plain == summary.render(run.cfg, run.records, run.manifest, interop=None)
    assert "Interoperability" not in plain
    data = interop_data()
    with_it = summary.render(run.cfg, run.records, run.manifest, interop=data)
    section = interop_page.section(data)
    assert section in with_it and with_it.index(section) < with_it.index("## Methods")
    assert with_it.replace(section, "") == plain


def test_the_report_reads_interop_json_beside_the_seeds_and_renders_both_pages(tmp_path):
    folder = tmp_path / "smoke"
    shutil.copytree(ROOT / "results" / "smoke", folder)
    for name in ("interop.json", "interop.md"):          # the committed stage's, if any
        (folder / name).unlink(missing_ok=True)
    assert seeds.load(folder).interop is None
    data = interop_data()
    (folder / "interop.json").write_text(json.dumps(data))
    run = seeds.load(folder)
    assert run.interop == data
    pages.write_run(run, plots=False)
    assert (folder / "interop.md").read_text() == interop_page.render(data)
    assert interop_page.section(data) in (folder / "summary.md").read_text()
    assert (folder / "interop.md").read_text().startswith("# smoke: interoperability (seed 5)\n")
