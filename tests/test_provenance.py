"""The commit recorded beside results: -dirty for changed code, not for other results."""
from __future__ import annotations

import subprocess

import tracking
from bench.run.manifest import manifest
from tracking import provenance


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


def test_outputs_under_results_do_not_make_the_code_dirty(tmp_path, monkeypatch):
    (tmp_path / "results" / "smoke").mkdir(parents=True)
    (tmp_path / "results" / "smoke" / "summary.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(tracking, "PROJECT_ROOT", tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True).stdout.strip()
    cfg = {"seeds": [0]}

    (tmp_path / "results" / "smoke" / "summary.md").write_text("a fresh smoke run\n")
    assert provenance.git_commit() == head + "-dirty"            # nothing ignored: it counts
    assert manifest(cfg, 1.0, "sqlite:///m.db", {})["git_commit"] == head

    (tmp_path / "code.py").write_text("x = 2\n")                 # changed code always counts
    assert manifest(cfg, 1.0, "sqlite:///m.db", {})["git_commit"] == head + "-dirty"
