"""Read a results/<preset>/ folder into one run: seeds merged, presets checked, legacy folders migrated.

Seeds are independent jobs (one SLURM job per seed is fine): each finished seed leaves
``seeds/seed<k>/`` with records.json ({"seed": k, "records": [...]}), manifest.json (the
preset as that job ran it, commit, versions, wall time) and robustness.csv when the preset
measures robustness. This module only reads and merges them; bench.report renders and
writes the top-level files from what it returns, so the drift test can re-derive every
committed table from the per-seed data without writing anything.

A folder from before the per-seed layout (top-level results.json + manifest.json only) is
read as it is ("legacy"), and ``migrate`` moves it into seeds/seed<k>/ unchanged.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SEEDS_DIR = "seeds"
# Preset keys seed jobs may differ in: which seeds, and the words and wall-time budget around
# the experiment, none of which changes a computed number (a budget revised between seed jobs
# must not orphan the seeds already run).
IGNORED_KEYS = ("seeds", "description", "why", "budget_minutes", "selection", "caveats")
# Two presets measure the same setting when they agree apart from these as well: their name,
# their robustness stage (which changes no record) and deterministic mode (the same
# computation with capped kernels). Their seeds are then draws from one population.
SAME_SETTING_IGNORES = IGNORED_KEYS + ("robustness", "name", "deterministic")


class LayoutError(ValueError):
    """A results folder that cannot be read or migrated as asked (one-line message)."""


class MixedPresets(LayoutError):
    """Seed jobs of one folder ran different presets (the message names the keys)."""


@dataclass
class Run:
    """One results/<preset>/ folder as the report sees it."""
    name: str
    folder: Path
    layout: str                      # "seeds" or "legacy"
    cfg: dict
    records: list[dict]
    manifest: dict
    rows: list[dict] | None = None   # robustness rows, None when not measured
    seeds_found: list[int] = field(default_factory=list)
    interop: dict | None = None      # interop.json (python -m bench interop), None when not run


def seed_dirs(folder: Path) -> dict[int, Path]:
    """seeds/seed<k>/ folders that hold a finished seed (records.json and manifest.json)."""
    out = {}
    for d in sorted((Path(folder) / SEEDS_DIR).glob("seed*")):
        m = re.fullmatch(r"seed(\d+)", d.name)
        if m and (d / "records.json").exists() and (d / "manifest.json").exists():
            out[int(m.group(1))] = d
    return dict(sorted(out.items()))


def is_run(folder: Path) -> bool:
    folder = Path(folder)
    return bool(seed_dirs(folder)) or (folder / "results.json").exists()


def _flat(d, prefix=""):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def differing_keys(presets: list[dict]) -> list[str]:
    """Dotted keys (``train.epochs``) whose values differ between presets, IGNORED_KEYS aside."""
    flats = [_flat({k: v for k, v in p.items() if k not in IGNORED_KEYS}) for p in presets]
    keys = sorted(set().union(*flats)) if flats else []
    return [k for k in keys if len({json.dumps(f.get(k, "<absent>"), sort_keys=True) for f in flats}) > 1]


def same_setting(a: dict, b: dict) -> bool:
    """Presets ``a`` and ``b`` measure the same setting (SAME_SETTING_IGNORES aside)."""
    strip = (lambda p: {k: v for k, v in p.items() if k not in SAME_SETTING_IGNORES})
    return json.dumps(strip(a), sort_keys=True) == json.dumps(strip(b), sort_keys=True)


def check_same_preset(name: str, manifests: dict[int, dict]) -> None:
    keys = differing_keys([m["preset"] for m in manifests.values()])
    if keys:
        raise MixedPresets(f"results/{name}: seed jobs {sorted(manifests)} ran different presets "
                           f"(differing keys: {', '.join(keys)}); move the odd seed out or rerun it")


def _job_key(m: dict) -> tuple:
    """Seeds that ran in one job share its wall time: count each job once."""
    return (m.get("git_commit"), m.get("date_utc"), m.get("wall_seconds"))


def merged_manifest(manifests: dict[int, dict]) -> dict:
    """The top-level manifest, derived from the per-seed ones alone (deterministic)."""
    first = manifests[min(manifests)]
    # Seed jobs may differ only in their words (IGNORED_KEYS): the newest job's describe the run,
    # so revising a description or budget after seed 0 shows once the next seed lands.
    newest = max(manifests.values(), key=lambda m: m.get("date_utc", ""))["preset"]
    words = {k: newest[k] for k in IGNORED_KEYS if k != "seeds" and k in newest}
    seeds = sorted(manifests)
    commits = {str(k): m.get("git_commit") for k, m in manifests.items()}
    jobs = {_job_key(m): m.get("wall_seconds") or 0.0 for m in manifests.values()}
    runs: dict = {}
    for m in manifests.values():
        runs.update(m.get("mlflow_parent_runs") or {})
    return {
        "preset": dict(first["preset"], **words, seeds=seeds),
        "git_commit": first.get("git_commit") if len(set(commits.values())) == 1 else None,
        "git_commits": commits,
        "versions": first.get("versions"),
        "seeds": seeds,
        "wall_seconds": round(sum(jobs.values()), 1),
        "jobs": len(jobs),
        "date_utc": max(m.get("date_utc", "") for m in manifests.values()),
        "machine": first.get("machine"),
        "precision": first.get("precision"),
        "tracking_uri": first.get("tracking_uri"),
        "mlflow_parent_runs": dict(sorted(runs.items())),
        "seed_manifests": {str(k): manifests[k] for k in seeds},
    }


def _read_rows(path: Path) -> list[dict]:
    from .. import robustness  # heavy (torch); only when a folder has robustness data
    return robustness.read_rows(path)


INTEROP_FILE = "interop.json"


def read_interop(folder: Path) -> dict | None:
    """The interop stage's interop.json beside the seeds (None when the stage has not run)."""
    path = Path(folder) / INTEROP_FILE
    return json.loads(path.read_text()) if path.exists() else None


def load(folder: Path) -> Run:
    """The run in ``folder``: merged seeds when seeds/ exists, else the legacy top-level files."""
    run = _load(Path(folder))
    run.interop = read_interop(folder)
    return run


def _load(folder: Path) -> Run:
    dirs = seed_dirs(folder)
    if not dirs:
        if not (folder / "results.json").exists():
            raise FileNotFoundError(f"{folder}: no seeds/seed*/ and no results.json")
        man = json.loads((folder / "manifest.json").read_text())
        records = json.loads((folder / "results.json").read_text())
        csv_path = folder / "robustness.csv"
        return Run(folder.name, folder, "legacy", man["preset"], records, man,
                   _read_rows(csv_path) if csv_path.exists() else None,
                   sorted({int(r.get("seed", 0)) for r in records}))
    manifests, records, rows, any_rows = {}, [], [], False
    for k, d in dirs.items():
        manifests[k] = json.loads((d / "manifest.json").read_text())
        data = json.loads((d / "records.json").read_text())
        recs = data["records"] if isinstance(data, dict) else data
        records += [dict(r, seed=int(r.get("seed", k))) for r in recs]
        if (d / "robustness.csv").exists():
            any_rows = True
            rows += _read_rows(d / "robustness.csv")
    check_same_preset(folder.name, manifests)
    man = merged_manifest(manifests)
    return Run(folder.name, folder, "seeds", man["preset"], records, man, rows if any_rows else None,
               sorted(manifests))


def robustness_is_current(rows: list[dict] | None) -> bool:
    """Rows in the robustness stage's current CSV schema (older runs wrote other columns,
    which today's robustness.render cannot read; such a folder needs a new run)."""
    from .. import robustness
    return bool(rows) and list(rows[0]) == list(robustness.FIELDS)


def missing_seeds(run: Run, expected: list[int] | None) -> list[int]:
    return sorted(set(expected or []) - set(run.seeds_found))


def migrate(folder: Path) -> list[Path]:
    """Move a legacy folder's data into seeds/seed<k>/ without changing a record or a row:
    results.json is split by each record's seed, robustness.csv by its seed column, and each
    seed gets the run's manifest with ``migrated_from`` saying that the seeds ran as one job.
    The top-level results.json, manifest.json and robustness.csv are removed (the report
    writes them again from the seeds)."""
    folder = Path(folder)
    if seed_dirs(folder):
        raise LayoutError(f"{folder.name}: already has {SEEDS_DIR}/; nothing to migrate")
    man = json.loads((folder / "manifest.json").read_text())
    records = json.loads((folder / "results.json").read_text())
    seeds = sorted({int(r.get("seed", 0)) for r in records})
    header, by_seed = None, {}
    csv_path = folder / "robustness.csv"
    if csv_path.exists():
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            for r in reader:
                by_seed.setdefault(int(r["seed"]), []).append(r)
    written = []
    for k in seeds:
        d = folder / SEEDS_DIR / f"seed{k}"
        d.mkdir(parents=True, exist_ok=True)
        recs = [r for r in records if int(r.get("seed", 0)) == k]
        (d / "records.json").write_text(json.dumps({"seed": k, "records": recs}, indent=1))
        sm = dict(man, migrated_from=f"top-level results.json of a run of seeds {seeds} in one job "
                                     f"(wall_seconds is that job's)")
        (d / "manifest.json").write_text(json.dumps(sm, indent=2))
        written += [d / "records.json", d / "manifest.json"]
        if header:
            with open(d / "robustness.csv", "w", newline="") as f:
                w = csv.DictWriter(f, header)
                w.writeheader()
                w.writerows(by_seed.get(k, []))
            written.append(d / "robustness.csv")
    for name in ("results.json", "manifest.json", "robustness.csv"):
        if (folder / name).exists():
            (folder / name).unlink()
    return written

