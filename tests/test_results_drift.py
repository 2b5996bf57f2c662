"""No drift: every committed table is what the code renders from the data stored beside it,
and committed results name no machine.

A results/<preset>/ folder is either the per-seed layout (seeds/seed<k>/records.json,
manifest.json, robustness.csv: the top-level results.json, manifest.json and robustness.csv
must then be those seeds merged) or a legacy folder (top-level results.json + manifest.json
only). Either way summary.md and robustness.md are rendered again from the data (summary.md
with the interop section, and interop.md, where the interop stage left interop.json), and so are
results/README.md (the verdict per claim) and README.md's generated result blocks."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from bench import robustness
from bench.report import claims, interop_page, pages, summary
from bench.report import seeds as aggregate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
RUNS = sorted(p for p in RESULTS.iterdir() if p.is_dir() and aggregate.is_run(p))
SEEDED = [p for p in RUNS if aggregate.seed_dirs(p)]


@functools.lru_cache(maxsize=None)
def _run(folder: Path) -> aggregate.Run:
    return aggregate.load(folder)


def test_there_are_committed_runs():
    assert {"smoke", "cpu-cifar10", "fashion-mnist-reference"} <= {p.name for p in RUNS}


@pytest.mark.parametrize("folder", RUNS, ids=[p.name for p in RUNS])
def test_summary_is_rendered_from_its_data(folder):
    run = _run(folder)
    assert (folder / "summary.md").read_text() == summary.render(run.cfg, run.records, run.manifest,
                                                                 interop=run.interop), \
        f"{folder.name}/summary.md differs from its data: python -m bench report --preset {folder.name}"


@pytest.mark.parametrize("folder", [p for p in RUNS if _run(p).interop is not None], ids=lambda p: p.name)
def test_interop_page_is_rendered_from_its_data(folder):
    assert (folder / "interop.md").read_text() == interop_page.render(_run(folder).interop), \
        f"{folder.name}/interop.md differs from interop.json: python -m bench report --preset {folder.name}"


@pytest.mark.parametrize("folder", SEEDED, ids=[p.name for p in SEEDED])
def test_top_level_files_are_the_seeds_merged(folder):
    run = _run(folder)
    assert json.loads((folder / "results.json").read_text()) == run.records
    assert json.loads((folder / "manifest.json").read_text()) == run.manifest
    if run.rows is not None:   # NaN marks a setting not run; NaN != NaN, so compare with it as None
        assert _nan_as_none(robustness.read_rows(folder / "robustness.csv")) == _nan_as_none(run.rows)


def _nan_as_none(rows: list[dict]) -> list[dict]:
    return [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in rows]


@pytest.mark.parametrize("folder", [p for p in RUNS if _run(p).rows is not None], ids=lambda p: p.name)
def test_robustness_is_rendered_from_its_csv(folder):
    run = _run(folder)
    if not aggregate.robustness_is_current(run.rows):
        pytest.skip(f"{folder.name}/robustness.csv predates the robustness stage's current columns "
                    "(docs/method.md#robustness); its next run renews it")
    assert (folder / "robustness.md").read_text() == robustness.render(run.cfg, run.rows)


def test_results_readme_gives_the_verdicts_of_the_data():
    assert (RESULTS / "README.md").read_text() == claims.render([_run(p) for p in RUNS]), \
        "results/README.md differs from its data: python -m bench report --all"


def test_readme_result_blocks_are_rendered_from_the_data():
    blocks = pages.readme_blocks((ROOT / "README.md").read_text())
    assert {"smoke", "cpu-cifar10", "fashion-mnist-reference"} <= set(blocks)
    for name, block in blocks.items():
        assert block == pages.readme_block(_run(RESULTS / name)), \
            f"README.md's block for {name} differs from its data: python -m bench report --all"


def test_committed_results_name_no_machine():
    pattern = re.compile(r"(/work/|/home/|/root/|/tmp/|/Users/|[A-Z]:\\\\)")
    for path in RESULTS.rglob("*"):
        if path.suffix in (".md", ".json", ".csv"):
            hits = pattern.findall(path.read_text())
            assert not hits, f"{path.relative_to(ROOT)} names a machine path: {hits[:3]}"
