"""Aggregation of seeds run as separate jobs, the refusal to mix presets, the missing-seed
message, legacy migration, the verdict rules of results/README.md, and ``report --all``.
Every folder here is built by hand from small records (20 test images)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from annsnn.metrics import correct_bits
from bench import report
from bench.report import claims, pages
from bench.report import summary as summary_page
from bench.report import seeds as aggregate
from bench.__main__ import main

N = 20
ROOT = Path(__file__).resolve().parents[1]


def _bits(k_right: int, offset: int = 0) -> str:
    ok = torch.zeros(N, dtype=torch.long)
    ok[[(offset + i) % N for i in range(k_right)]] = 1
    return correct_bits(ok, torch.ones(N, dtype=torch.long))


def _record(method, act, seed, right_at: dict[int, int], exact=False, identical=N, ann=0.9):
    """``right_at``: t -> images right (T_max = 4); accuracy at t = 3 as at t = 2."""
    acc = [right_at[1] / N, right_at[2] / N, right_at[2] / N, right_at[4] / N]
    return {"method": method, "activation": act, "seed": seed, "leak": 1.0, "T_max": 4, "n_images": N,
            "acc": acc, "ann_acc": ann, "ann_acc_unfolded": ann, "conv_error": [0.0 if exact else 0.5] * 4,
            "identical_at_t1": identical, "exact_at_t1": exact, "max_spikes_per_step": 4 if exact else 1,
            "max_n_per_layer": {"1": 4 if exact else 1}, "first_layer_macs": 10.0, "ann_macs": 100.0,
            "sops": [5.0 * t for t in range(1, 5)], "ops_ratio": [0.1 * t for t in range(1, 5)],
            "energy_ratio": [0.2 * t for t in range(1, 5)], "description": f"{method} recipe",
            "correct_at": {str(t): _bits(k, seed) for t, k in right_at.items()}}


def _records(seed):
    return [_record("qcfs", "qcfs", seed, {1: 4, 2: 8, 4: 14}),
            _record("steprelu", "steprelu", seed, {1: 18, 2: 18, 4: 18}, exact=True)]


def _cfg(seeds, **kw):
    cfg = {"name": "tiny", "description": "hand-made", "dataset": "fashion-mnist", "arch": "cnn-small",
           "methods": ["qcfs", "steprelu"], "seeds": seeds, "T_max": 4, "summary_t": [1, 2, 4],
           "train": {"epochs": 1}, "trainer": {"accelerator": "cpu"}}
    cfg.update(kw)
    return cfg


def _manifest(cfg, commit="a" * 40, wall=10.0, date="2026-01-01T00:00:00Z"):
    return {"preset": cfg, "git_commit": commit, "versions": {"torch": "x"}, "seeds": cfg["seeds"],
            "wall_seconds": wall, "date_utc": date, "machine": {"cpus": 2},
            "tracking_uri": "sqlite:///<project>/mlflow.db", "mlflow_parent_runs": {}}


def _seed_job(folder: Path, seed: int, records=None, cfg=None, **man_kw) -> None:
    """What one seed's job leaves behind (the runner's per-seed layout)."""
    d = folder / "seeds" / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "records.json").write_text(json.dumps({"seed": seed, "records": records or _records(seed)}))
    (d / "manifest.json").write_text(json.dumps(_manifest(cfg or _cfg([seed]), **man_kw)))


def test_two_seed_jobs_are_merged(tmp_path):
    out = tmp_path / "tiny"
    _seed_job(out, 0, wall=10.0, date="2026-01-01T00:00:00Z")
    _seed_job(out, 1, commit="b" * 40, wall=12.0, date="2026-01-02T00:00:00Z")
    report.aggregate(out, expected=[0, 1], plots=False)
    records = json.loads((out / "results.json").read_text())
    man = json.loads((out / "manifest.json").read_text())
    assert sorted({r["seed"] for r in records}) == [0, 1] and len(records) == 4
    assert man["preset"]["seeds"] == [0, 1] and set(man["seed_manifests"]) == {"0", "1"}
    assert man["wall_seconds"] == 22.0 and man["jobs"] == 2 and man["git_commit"] is None
    summary = (out / "summary.md").read_text()
    assert "seeds [0, 1]" in summary
    assert "Seeds from different commits: seed 0 `aaaaaaa`, seed 1 `bbbbbbb`" in summary
    # qcfs at t = 1: 4/20 right on both seeds -> 20.00 ± 0.00 [20.00, 20.00]
    row = next(line for line in summary.splitlines() if line.startswith("| qcfs | 1 |"))
    assert "| 20.00 ± 0.00 [20.00, 20.00] |" in row
    assert summary == summary_page.render(*(lambda r: (r.cfg, r.records, r.manifest))(aggregate.load(out)))


def test_seeds_of_one_job_count_its_wall_time_once(tmp_path):
    out = tmp_path / "tiny"
    for k in (0, 1):
        _seed_job(out, k, cfg=_cfg([0, 1]), wall=30.0)
    assert aggregate.load(out).manifest["wall_seconds"] == 30.0


def test_seed_jobs_may_differ_in_words_and_budget_only(tmp_path):
    out = tmp_path / "tiny"
    _seed_job(out, 0)
    _seed_job(out, 1, cfg=_cfg([1], description="revised", why="revised", budget_minutes=90),
              date="2026-02-01T00:00:00Z")
    run = aggregate.load(out)
    assert run.seeds_found == [0, 1]
    # the words of the newest seed job describe the whole run, not seed 0's older ones
    assert (run.cfg["description"], run.cfg["why"], run.cfg["budget_minutes"]) == ("revised", "revised", 90)
    assert "## Why this setting\n\nFrom the preset's `why`" in summary_page.render(run.cfg, run.records, run.manifest)
    _seed_job(out, 2, cfg=_cfg([2], calib_size=7))
    with pytest.raises(aggregate.MixedPresets, match=r"differing keys: calib_size\)"):
        aggregate.load(out)


def test_mixed_presets_are_refused_naming_the_keys(tmp_path, monkeypatch, capsys):
    out = tmp_path / "tiny"
    _seed_job(out, 0)
    _seed_job(out, 1, cfg=_cfg([1], T_max=8, train={"epochs": 2}))
    with pytest.raises(aggregate.MixedPresets, match=r"differing keys: T_max, train\.epochs\)"):
        aggregate.load(out)
    monkeypatch.setattr(pages, "RESULTS", tmp_path)
    assert main(["report", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "T_max, train.epochs" in err


def test_missing_seeds_are_named(tmp_path, capsys):
    out = tmp_path / "tiny"
    _seed_job(out, 0)
    _seed_job(out, 2)
    report.aggregate(out, expected=[0, 1, 2], plots=False)
    line = capsys.readouterr().out.splitlines()[0]
    assert "seeds found [0, 2]" in line and "missing: [1]" in line


def _legacy_copy(src: Path, out: Path) -> None:
    """``src`` (a committed run) as the layout before per-seed folders: one top-level
    results.json and one manifest for a job that ran every seed, and its summary.md."""
    out.mkdir()
    if not (src / "seeds").is_dir():
        for name in ("results.json", "manifest.json", "summary.md"):
            shutil.copy(src / name, out / name)
        return
    run = aggregate.load(src)
    man = {k: v for k, v in run.manifest.items() if k not in ("seed_manifests", "git_commits", "jobs")}
    man["git_commit"] = next(iter(run.manifest["git_commits"].values()))
    (out / "results.json").write_text(json.dumps(run.records))
    (out / "manifest.json").write_text(json.dumps(man))
    (out / "summary.md").write_text(summary_page.render(run.cfg, run.records, man))


def test_legacy_folder_migrates_unchanged(tmp_path):
    """The committed 5-seed reference, as a legacy folder moved into seeds/, renders the same summary."""
    src = ROOT / "results" / "fashion-mnist-reference"
    out = tmp_path / src.name
    _legacy_copy(src, out)
    legacy = aggregate.load(out)
    assert legacy.layout == "legacy"
    aggregate.migrate(out)
    assert sorted(aggregate.seed_dirs(out)) == [0, 1, 2, 3, 4] and not (out / "results.json").exists()
    run = aggregate.load(out)
    assert run.layout == "seeds" and run.records == legacy.records
    assert run.manifest["wall_seconds"] == legacy.manifest["wall_seconds"]   # one job, counted once
    assert summary_page.render(run.cfg, run.records, run.manifest) == (out / "summary.md").read_text()
    with pytest.raises(aggregate.LayoutError):
        aggregate.migrate(out)


def _run(records, name="tiny"):
    seeds = sorted({r["seed"] for r in records})
    return aggregate.Run(name, Path(name), "seeds", _cfg(seeds), records, _manifest(_cfg(seeds)), None, seeds)


def test_exactness_rule():
    assert claims.exactness(_run(_records(0) + _records(1))).verdict == claims.SUPPORTED
    broken = _records(0) + _records(1)
    broken[3] = dict(broken[3], identical_at_t1=N - 1)          # one image differs on seed 1
    assert claims.exactness(_run(broken)).verdict == claims.NOT_SUPPORTED
    only_qcfs = [r for r in broken if r["method"] == "qcfs"]
    assert claims.exactness(_run(only_qcfs)).verdict == claims.NOT_TESTABLE


def test_latency_rule():
    """Claim 2a on 3 seeds of 20 images: steprelu at t = 1 against qcfs at t = 1, 2, 4 (k = 3)."""
    seeds = [_records(k) for k in range(3)]
    v = claims.latency_steps(_run([r for rs in seeds for r in rs]))
    assert v.verdict == claims.SUPPORTED and "k = 3" in v.why
    # qcfs as good as steprelu at t = 4: no advantage there -> not supported
    tied = [[_record("qcfs", "qcfs", k, {1: 4, 2: 8, 4: 18}), rs[1]] for k, rs in enumerate(seeds)]
    v = claims.latency_steps(_run([r for rs in tied for r in rs]))
    assert v.verdict == claims.NOT_SUPPORTED and "qcfs at t = 4" in v.why
    # better by one image per seed at t = 4: the interval over seeds and images includes 0
    close = [[_record("qcfs", "qcfs", k, {1: 4, 2: 8, 4: 17}), rs[1]] for k, rs in enumerate(seeds)]
    v = claims.latency_steps(_run([r for rs in close for r in rs]))
    assert v.verdict == claims.NOT_SUPPORTED and "qcfs at t = 4 (+5.00 [" in v.why
    # steprelu not within 1 point of its ANN at t = 1 -> not supported
    far = [dict(r, ann_acc=0.99) if r["method"] == "steprelu" else r for rs in seeds for r in rs]
    assert claims.latency_steps(_run(far)).verdict == claims.NOT_SUPPORTED
    # no per-image correctness: no paired comparison -> not testable
    bare = [{k: v for k, v in r.items() if k != "correct_at"} for rs in seeds for r in rs]
    assert claims.latency_steps(_run(bare)).verdict == claims.NOT_TESTABLE


def test_verdicts_combine_over_presets():
    S, N_, X = claims.SUPPORTED, claims.NOT_SUPPORTED, claims.NOT_TESTABLE
    assert claims.combine([S, X]) == S
    assert claims.combine([S, N_, X]) == N_
    assert claims.combine([X, X]) == X


def test_no_robustness_data_is_not_testable():
    v = claims.robustness_claims(_run(_records(0)))
    assert set(v) == {"noise", "adversarial", "leak_clean", "leak_noise"}
    assert {c.verdict for c in v.values()} == {claims.NOT_TESTABLE}
    assert "no robustness data in tiny" in v["noise"].why


def test_report_all_writes_the_verdict_page_and_readme_blocks(tmp_path, monkeypatch):
    results = tmp_path / "results"
    _seed_job(results / "tiny", 0)
    _seed_job(results / "tiny", 1)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n" + pages.BLOCK_START.format(name="tiny") + "\nstale\n" + pages.BLOCK_END + "\n")
    monkeypatch.setattr(pages, "RESULTS", results)
    monkeypatch.setattr(pages, "write_plots", lambda *a: None)     # figures are not under test here
    real = pages.report_all
    monkeypatch.setattr(pages, "report_all", lambda: real(readme=readme))
    assert main(["report", "--all"]) == 0
    page = (results / "README.md").read_text()
    assert page.startswith("# What this benchmark says about the StepReLU paper's claims")
    assert "| 1. Exact conversion at one step | **supported** |" in page
    assert "not found" in page                                 # the published table is there
    assert "stale" not in readme.read_text()
    assert pages.readme_blocks(readme.read_text())["tiny"] == pages.readme_block(aggregate.load(results / "tiny"))
