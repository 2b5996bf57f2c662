"""summary.md of a run: the main table, exactness, operating points and costs, spike counts,
paired tests, the methods' definitions and the provenance, all from the run's records.
"""
from __future__ import annotations

from tracking.machine import class_line

from .. import stats
from . import depth, interop_page, tables
from .records import claims_exactness, fmt as _fmt, ordered as _ordered


def summary_table(cfg: dict, records: list[dict]) -> str:
    ts = cfg["summary_t"]
    T = cfg["T_max"]
    head = (["method", "leak", "ANN acc (folded)", "ANN acc (unfolded)"]
            + [f"SNN t={t}" for t in ts]
            + [f"conv. err t=1", f"conv. err t={T}", f"ops/ANN MACs t={T}", f"energy/ANN t={T}",
               "largest n used (spikes/step)", "identical at t=1 (exact methods)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, leak), rs in _ordered(cfg, records):
        ident = [f"{r['identical_at_t1']}/{r['n_images']}" for r in rs
                 if r["identical_at_t1"] is not None and claims_exactness(r)]
        row = ([method, f"{leak:g}", _fmt([r["ann_acc"] for r in rs]),
                _fmt([r["ann_acc_unfolded"] for r in rs])]
               + [_fmt([r["acc"][t - 1] for r in rs]) for t in ts]
               + [_fmt([r["conv_error"][0] for r in rs], 1, 4), _fmt([r["conv_error"][-1] for r in rs], 1, 4),
                  _fmt([r["ops_ratio"][-1] for r in rs], 1, 3), _fmt([r["energy_ratio"][-1] for r in rs], 1, 3),
                  _fmt([r["max_spikes_per_step"] for r in rs], 1, 0), ", ".join(ident) or "-"])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def paired_table(cfg: dict, records: list[dict]) -> str:
    """The exact method (the one under study) against every other setting on the same test
    images, at fixed budgets of 1, 4 and T_max steps: the difference with its 95 % interval
    (bench.stats: hierarchical bootstrap over seeds, then images; one comparison each, no
    family correction) and McNemar's p per seed."""
    groups = _ordered(cfg, records)
    refs = [(k, rs) for k, rs in groups if any(claims_exactness(r) for r in rs)]
    if not refs:
        return ""
    (ref_m, ref_leak), ref_rs = refs[0]
    ts = sorted({t for t in (1, 4, cfg["T_max"]) if t <= cfg["T_max"]})
    head = ["method", "leak", "t", f"acc {ref_m} - acc method (points) [95 % interval]", "McNemar p per seed",
            "seeds (bootstrap)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (m, leak), rs in groups:
        if (m, leak) == (ref_m, ref_leak):
            continue
        for t in ts:
            a, b, missing = stats.record_pairs(ref_rs, t, rs, t)
            d = stats.paired_bits(a, b) if a and not missing else None
            if d is None:
                continue
            lines.append(f"| {m} | {leak:g} | {t} | {d.interval()} | {d.seed_ps()} | {d.n_seeds} ({d.kind}) |")
    return "\n".join(lines) if len(lines) > 2 else ""


def exactness_lines(records: list[dict]) -> list[str]:
    """The exactness claim on the trained network, one line per run of a method that claims it."""
    return [f"- {r['method']} (seed {r.get('seed', 0)}, leak {r['leak']:g}): identical predictions: "
            f"{r['identical_at_t1']}/{r['n_images']} at t = 1"
            for r in records if claims_exactness(r) and r["identical_at_t1"] is not None]


DEVIATIONS = (
    "Baselines as their papers define them, with these stated differences: maxnorm, robustnorm "
    "and opi reset by subtraction (Rueckauer et al. 2017), not to zero (Diehl et al. 2015); "
    "robustnorm takes the 99.9th percentile over the non-zero activations (Rueckauer's toolbox), "
    "robustnorm-all over all values incl. zeros (SpikingJelly's converter); thresholds come from "
    "a fixed calibration set of training images. qcfs trains lam_q from 8 with the weights' "
    "weight decay as Bu et al.'s code, but with this preset's schedule and epochs (CPU scale), no "
    "weight decay on BatchNorm and biases (their SGD decays every parameter), and a "
    "straight-through window 0 <= floor(x L / lam + 1/2) <= L instead of their clamp's "
    "0 <= x <= lam. steprelu-single starts at V0 = theta*L/2, as QCFS's neuron does, so the "
    "ablation isolates the binary spikes.")


def _methods_table(records: list[dict], cfg: dict) -> str:
    said = {r["method"]: r["description"] for r in records if r.get("description")}
    names = [m for m in cfg["methods"] if any(r["method"] == m for r in records)]
    rows = [f"| `{m}` | {said.get(m) or 'not recorded by this run: see its commit'} |" for m in names]
    return "| method | what it is |\n|---|---|\n" + "\n".join(rows)


def render(cfg: dict, records: list[dict], man: dict, interop: dict | None = None) -> str:
    """summary.md from the run's records and manifest (re-renderable: ``python -m bench report``).
    ``interop``: the interop stage's interop.json, shown as a section when given."""
    exact = "\n".join(exactness_lines(records))
    groups = _ordered(cfg, records)
    spikes = tables.spike_distribution_table(groups)
    anns = depth.ann_table(cfg, records)
    depth_md = depth.depth_tables(cfg, records)
    paired = paired_table(cfg, records)
    return (f"# {cfg['name']}: {cfg['dataset']} / {cfg['arch']}\n\n{cfg.get('description', '')}\n\n"
            f"Test split ({records[0]['n_images'] if records else 0} images), seeds {cfg['seeds']}, "
            f"T_max = {cfg['T_max']}. Accuracies in %, mean ± std over seeds where there are several. "
            f"ANN acc (folded) is the source ANN after BatchNorm folding, the reference the SNN is "
            f"compared with; 'identical at t=1' counts test images whose SNN prediction at t = 1 equals "
            f"the folded ANN's, shown only for methods that claim that exactness. "
            f"ops/ANN MACs = (first-layer MACs x t + synaptic operations) / ANN MACs; "
            f"energy at 4.6 pJ/MAC, 0.9 pJ/AC. 'largest n used' is the most spikes one neuron sent "
            f"in one step (1 for binary neurons). The SNN at t = 1, 2 and 4 is each method's "
            f"accuracy at a fixed budget of that many steps.\n\n{summary_table(cfg, records)}\n\n"
            + (f"Exactness at t = 1 on the trained network:\n{exact}\n\n" if exact else "")
            + "## Operating point: where each SNN reaches its own ANN, and what it costs there\n\n"
            "First t at which the SNN is within 1.0 (0.5) points of its source ANN; costs at that t. "
            "Energy with the first layer's analog MACs paid at every step, and paid once per image "
            "(the static input's current is the same at every step). Binary sub-steps: t x the "
            "largest n a layer used, for the largest layer and summed over layers (layers in "
            "sequence), the latency on hardware that only sends binary spikes.\n\n"
            f"{tables.operating_point_table(groups)}\n\n"
            + (f"## Each method's ANN\n\nThe folded ANN's test accuracy, its gap to the ReLU ANN of the same "
               f"seed (what the quantised activation costs before any conversion), and the range each "
               f"activation learned per spiking layer (selection.md, where present, shows how the "
               f"settings were chosen on validation).\n\n{anns}\n\n" if anns else "")
            + (f"## Depth: firing rate and conversion error by spiking layer\n\nPer spiking layer in "
               f"network order, mean over seeds: spikes per neuron per step, and the layer's output "
               f"averaged over steps 1..t against the folded ANN's activation at the same place "
               f"(sum of |difference| / sum of |activation|).\n\n{depth_md}\n\n![depth](depth.png)\n\n"
               if depth_md else "")
            + (f"## Spike counts per step (multi-spike methods)\n\nFraction of neuron-steps that "
               f"send n spikes, per layer, over all test images and steps (firing rate in the "
               f"results is spikes per neuron per step, above 1 where n > 1 is allowed).\n\n"
               f"{spikes}\n\n" if spikes else "")
            + (f"## Paired comparisons on the same test images\n\n"
               f"Each method against the one that claims exactness at the same budget of t steps: "
               f"the mean over seeds of the per-seed paired difference, its 95 % interval from a "
               f"hierarchical bootstrap (seeds, then images; images only with one seed) and McNemar's "
               f"exact p per seed (never pooled over seeds). The verdicts, with their families' "
               f"corrections, are in results/README.md.\n\n{paired}\n\n" if paired else "")
            + interop_page.section(interop)
            + f"## Methods\n\n{_methods_table(records, cfg)}\n\n"
            + (f"{DEVIATIONS}\n\n" if all(r.get("description") for r in records) else
               "This run predates the recorded method definitions; the baselines' conventions "
               "are those of its commit.\n\n")
            + "![accuracy vs t](accuracy_vs_t.png)\n\n![accuracy vs energy](accuracy_vs_energy.png)\n\n"
            + (f"## Why this setting\n\nFrom the preset's `why` (how the network, schedule and budget "
               f"were chosen, and what the test split influenced):\n\n{cfg['why']}\n\n" if cfg.get("why") else "")
            + provenance(man) + "\n")


def machine_words(man: dict) -> str:
    """The machine class the run was measured on (older manifests recorded only the CPU count)."""
    m = man.get("machine") or {}
    return class_line(m) if "cpu_model" in m else f"{m.get('cpus', '?')} CPU(s)"


def provenance(man: dict) -> str:
    """Commit and wall time; when seed jobs came from different commits, each seed's."""
    commits = man.get("git_commits") or {}
    if len(set(commits.values())) > 1:
        head = "Seeds from different commits: " + ", ".join(
            f"seed {k} `{(c or 'unknown')[:7]}`" for k, c in commits.items())
    else:
        head = f"Commit `{man['git_commit']}`"
    jobs = man.get("jobs") or 1
    prec = man.get("precision") or {}
    return (f"{head}, wall time {man['wall_seconds']:.0f} s"
            + (f" summed over {jobs} seed runs" if jobs > 1 else "")
            + (f" on {machine_words(man)}" if "cpu_model" in (man.get("machine") or {}) else "")
            + (f", training precision {prec['used']}" if prec.get("used") else "")
            + ", versions in manifest.json.")

