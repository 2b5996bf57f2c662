"""No drift: every committed table is what the code renders from the data stored beside it
(results.json + manifest.json, robustness.csv), the README's result tables are the
summaries' own, and committed results name no machine."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import report, robustness

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
RUNS = sorted(p.parent for p in RESULTS.glob("*/results.json"))


def _load(folder: Path):
    return (json.loads((folder / "results.json").read_text()),
            json.loads((folder / "manifest.json").read_text()))


def test_there_are_committed_runs():
    assert {"smoke", "cpu-cifar10"} <= {p.name for p in RUNS}


@pytest.mark.parametrize("folder", RUNS, ids=[p.name for p in RUNS])
def test_summary_is_rendered_from_its_data(folder):
    records, man = _load(folder)
    assert (folder / "summary.md").read_text() == report.render(man["preset"], records, man), \
        f"{folder.name}/summary.md differs from its data: python -m bench report --preset {folder.name}"


@pytest.mark.parametrize("folder", [p for p in RUNS if (p / "robustness.csv").exists()],
                         ids=lambda p: p.name)
def test_robustness_is_rendered_from_its_csv(folder):
    _, man = _load(folder)
    rows = robustness.read_rows(folder / "robustness.csv")
    assert (folder / "robustness.md").read_text() == robustness.render(man["preset"], rows)


def _main_table(text: str, first_cell: str) -> list[str]:
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(f"| {first_cell}"))
    out = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        out.append(line)
    return out


@pytest.mark.parametrize("name", ["smoke", "cpu-cifar10", "fashion-mnist-reference"])
def test_readme_tables_are_the_summaries(name):
    """The README's result section for ``name`` holds the summary's main table, verbatim."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(f"Result of `{name}`"):]
    table = _main_table((RESULTS / name / "summary.md").read_text(), "method | leak | ANN acc")
    assert _main_table(section, "method | leak | ANN acc") == table


def test_committed_results_name_no_machine():
    pattern = re.compile(r"(/work/|/home/|/root/|/tmp/|/Users/|[A-Z]:\\\\)")
    for path in RESULTS.rglob("*"):
        if path.suffix in (".md", ".json", ".csv"):
            hits = pattern.findall(path.read_text())
            assert not hits, f"{path.relative_to(ROOT)} names a machine path: {hits[:3]}"
