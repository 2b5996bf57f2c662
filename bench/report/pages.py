"""The pages the report writes: each results/<preset>/ folder's top-level files from its
seeds, results/README.md (the verdicts) and the generated result blocks of README.md.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from . import claims, interop_page, seeds, tables
from .. import robustness
from .plots import write_plots
from .records import ordered as _ordered
from .summary import exactness_lines, machine_words, paired_table, provenance, render, summary_table

RESULTS = Path(__file__).resolve().parents[2] / "results"


def expected_seeds(name: str) -> list[int] | None:
    """The seeds bench/presets/<name>.yaml lists (None when there is no such preset)."""
    from .. import presets
    try:
        return list(presets.load(name)["seeds"])
    except (presets.PresetError, OSError):
        return None


def seeds_line(run: "seeds.Run", expected: list[int] | None) -> str:
    missing = seeds.missing_seeds(run, expected)
    return (f"[report] results/{run.name} ({run.layout} layout): seeds found {run.seeds_found}"
            + (f"; listed by the preset but missing: {missing}" if missing else "")
            + ("; legacy folder: `python -m bench report --migrate " + run.name + "` moves it to seeds/"
               if run.layout == "legacy" else ""))


def aggregate(out_dir: Path, expected: list[int] | None = None, plots: bool = True) -> str:
    """Merge the finished seeds of results/<preset>/ (seeds/seed*/) and write the top-level
    results.json, manifest.json, summary.md, plots and robustness files. A legacy folder
    (top-level results.json only) is re-rendered from its own files. Returns the summary's
    main tables (what the runner prints). Raises seeds.MixedPresets when seed jobs ran
    different presets."""
    run = seeds.load(Path(out_dir))
    print(seeds_line(run, expected if expected is not None else expected_seeds(run.name)))
    return write_run(run, plots)


def write_run(run: "seeds.Run", plots: bool = True) -> str:
    """The top-level files of a loaded run (see ``aggregate``)."""
    out = run.folder
    if run.layout == "seeds":
        (out / "results.json").write_text(json.dumps(run.records, indent=1))
        (out / "manifest.json").write_text(json.dumps(run.manifest, indent=2))
    if plots:
        write_plots(run.cfg, run.records, out)
    (out / "summary.md").write_text(render(run.cfg, run.records, run.manifest, interop=run.interop))
    if run.interop is not None:
        (out / interop_page.PAGE_FILE).write_text(interop_page.render(run.interop))
    if run.rows is not None and not seeds.robustness_is_current(run.rows):
        print(f"[report] results/{run.name}/robustness.csv has an older column set than the robustness "
              "stage writes today: robustness.md left as it is; rerun the preset to renew it")
    elif run.rows is not None:
        if run.layout == "seeds":
            robustness.write(run.cfg, run.rows, out)
        else:
            (out / "robustness.md").write_text(robustness.render(run.cfg, run.rows))
    return (summary_table(run.cfg, run.records) + "\n" + "\n".join(exactness_lines(run.records))
            + "\n\n" + tables.operating_point_table(_ordered(run.cfg, run.records)))


# README.md's result sections: the block between these markers is generated; the prose
# around it is not. The drift test renders every block again and compares.
BLOCK_START = "<!-- generated from results/{name}: python -m bench report --all -->"
BLOCK_END = "<!-- end of generated block -->"


def readme_block(run: "seeds.Run") -> str:
    """What README.md shows of a run: the main table, the exactness line, the 1-point
    operating points, the paired tests (several seeds) and the provenance, from its data."""
    cfg, records, man = run.cfg, run.records, run.manifest
    groups = _ordered(cfg, records)
    op = tables.operating_point_table(groups).splitlines()
    op = op[:2] + [line for line in op[2:] if "| 1 pt |" in line]
    exact = exactness_lines(records)
    n_seeds = len(cfg["seeds"])
    parts = [(f"Mean ± std [95 % CI] over seeds {cfg['seeds']}:" if n_seeds > 1 else
              f"One seed ({cfg['seeds'][0]}):"), "", summary_table(cfg, records), ""]
    if exact:
        same = {ln.split(": identical predictions: ")[1] for ln in exact}
        parts += [f"Exactness at t = 1 on the trained network: {len(exact)} run(s) of the exact method, "
                  f"identical predictions {', '.join(sorted(same))}.", ""]
    parts += ["Where each SNN first comes within 1 point of its own ANN, and what it costs there "
              "(the 0.5-point rows, the spike-count distribution and the methods' definitions are in "
              "the summary):", "", "\n".join(op), ""]
    paired = paired_table(cfg, records)
    if paired and n_seeds > 1:
        parts += ["Paired with the exact method on the same test images at fixed budgets of t steps "
                  "(difference [95 % interval, hierarchical bootstrap over seeds, then images], McNemar's p "
                  "per seed):", "", paired, ""]
    parts.append(f"{provenance(man)}"
                 + ("" if "cpu_model" in (man.get("machine") or {}) else f" Machine: {machine_words(man)}.")
                 + " "
                 f"Data: `results/{run.name}/`.")
    return "\n".join([BLOCK_START.format(name=run.name), ""] + parts + ["", BLOCK_END])


def readme_blocks(text: str) -> dict[str, str]:
    """name -> the generated block as it stands in ``text`` (README.md)."""
    out = {}
    for m in re.finditer(r"<!-- generated from results/([^:]+): .*? -->.*?" + re.escape(BLOCK_END),
                         text, flags=re.S):
        out[m.group(1)] = m.group(0)
    return out


def update_readme(text: str, runs: dict[str, "seeds.Run"]) -> str:
    """README.md with every generated block rendered again from its run's data."""
    for name, block in readme_blocks(text).items():
        if name in runs:
            text = text.replace(block, readme_block(runs[name]))
    return text



def report_all(results_dir: Path | None = None, readme: Path | None = None) -> list[Path]:
    """Aggregate every results/<preset>/ folder, then write results/README.md (the verdict per
    claim) and the generated blocks of the project README. Returns the files written."""
    results_dir = Path(results_dir or RESULTS)
    runs = {}
    for folder in sorted(p for p in results_dir.iterdir() if p.is_dir() and seeds.is_run(p)):
        run = seeds.load(folder)
        print(seeds_line(run, expected_seeds(run.name)))
        write_run(run)
        runs[folder.name] = run
    written = [results_dir / "README.md"]
    written[0].write_text(claims.render(list(runs.values())))
    readme = readme if readme is not None else results_dir.parent / "README.md"
    if readme.exists():
        text = readme.read_text()
        new = update_readme(text, runs)
        if new != text:
            readme.write_text(new)
            written.append(readme)
    return written

