"""Committed results name no machine: a path inside the checkout is relative to it, a path
beside it (the offline data in ../shared/data) is ../-relative, so another clone reads the
same files."""
from __future__ import annotations

import re
from pathlib import Path

import tracking

ROOT = Path(__file__).resolve().parents[1]
# a home, a scratch or a work folder: where checkouts and data copies live, never system data
MACHINE_PATH = re.compile(r'(?<![\w.:/])/(?:work|home|root|tmp|Users|scratch|mnt|data)/')


def machine_paths(text: str) -> list[str]:
    return [text[max(0, m.start() - 30):m.end() + 30] for m in MACHINE_PATH.finditer(text)]


def test_committed_results_name_no_machine_path():
    bad = {}
    for f in (ROOT / "results").rglob("*"):
        if f.suffix in (".json", ".md", ".csv") and f.is_file():
            hits = machine_paths(f.read_text(errors="replace"))
            if hits:
                bad[str(f.relative_to(ROOT))] = hits[:2]
    assert not bad, bad


def test_the_check_sees_a_data_path_beside_the_checkout():
    assert machine_paths('"data_source": "offline copy /work/shared/data/cifar10-jpeg.tar.gz"')
    assert not machine_paths('"data_source": "offline copy /usr/share/datasets/fashion-mnist"')
    assert not machine_paths('"uri": "sqlite:///mlflow.db"')


def test_portable_makes_a_sibling_path_relative():
    beside = tracking.PROJECT_ROOT.resolve().parent / "shared" / "data" / "x.tar.gz"
    assert tracking.portable(f"offline copy {beside}", siblings=True) == "offline copy ../shared/data/x.tar.gz"
    assert tracking.portable(str(tracking.PROJECT_ROOT / "runs" / "a")) == "runs/a"
