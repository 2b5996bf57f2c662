"""results/README.md: one verdict per claim of the StepReLU paper, by stated mechanical rules.

Every verdict is computed here from the committed records (results/<preset>/) or, for noise
and leak, by bench.robustness.claims from the robustness rows; nothing is typed in. A rule
that cannot be applied to a preset's data says "not testable here" and why.

Verdicts over several presets: "not supported" when any preset that can test the claim
does not support it, "supported" when at least one can and all that can support it,
"not testable here" when none can.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import costs, robustness, stats
from ..stats import ALPHA
from . import published, seeds
from .records import by_setting, claims_exactness, fmt
from .seeds import Run

SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable here"
BUDGETS = (1, 2, 4)

RULE_EXACT = (
    "**Rule.** For every committed preset, every run of a method that claims exactness at "
    "t = 1 (steprelu: StepReLU ANN, multi-spike neuron with the same theta, L, phi) must give "
    "the same prediction as its BatchNorm-folded ANN on every test image at t = 1 "
    "(identical at t=1 = number of test images) on every seed. Supported iff that holds for "
    "every such run; not supported if one run misses one image; not testable here if a preset "
    "has no run of such a method.")
RULE_LATENCY = (
    "**Rule.** Per preset, with E the method that claims exactness and the baselines every "
    "method converted from another ANN (ReLU: maxnorm, robustnorm, opi; QCFS: qcfs): "
    f"supported iff (a) E is within 1 point of its own ANN at t = 1 on every seed, and (b) at "
    f"every fixed budget t in {{{', '.join(map(str, BUDGETS))}}} E at t = 1 is more accurate "
    f"than every baseline at t, with McNemar p < {ALPHA} on the same test images (discordant "
    "images pooled over seeds). Not supported if (a) or (b) fails for any comparison; not "
    "testable here if a preset lacks E or a baseline, or does not store per-image correctness "
    "at those t (no paired test possible). The baselines' own operating points (first t within "
    "1 point of their ANN) are shown beside it with the same test, but do not enter the rule.")
RULE_ROBUST = (
    "**Rule.** Given by `bench.robustness.claims` from the robustness rows of each preset "
    "(its lines below state it); a preset without robustness data cannot test the claim.")


@dataclass
class Verdict:
    verdict: str
    lines: list[str] = field(default_factory=list)


def combine(verdicts: list[str]) -> str:
    """The verdict over presets (module docstring)."""
    testable = [v for v in verdicts if v != NOT_TESTABLE]
    if not testable:
        return NOT_TESTABLE
    return NOT_SUPPORTED if NOT_SUPPORTED in testable else SUPPORTED


def _exact_records(run: Run) -> list[dict]:
    return [r for r in run.records if claims_exactness(r) and r.get("identical_at_t1") is not None]


def exactness(run: Run) -> Verdict:
    recs = _exact_records(run)
    if not recs:
        return Verdict(NOT_TESTABLE, [f"`{run.name}`: no run of a method that claims exactness."])
    bad = [r for r in recs if r["identical_at_t1"] != r["n_images"]]
    lines = []
    for (method, leak) in sorted({(r["method"], r["leak"]) for r in recs}):
        rs = [r for r in recs if (r["method"], r["leak"]) == (method, leak)]
        same = sum(r["identical_at_t1"] == r["n_images"] for r in rs)
        worst = min(rs, key=lambda r: r["identical_at_t1"] / r["n_images"])
        lines.append(
            f"| {run.name} | {method} | {leak:g} | {len(rs)} | {same} of {len(rs)} "
            f"(fewest: {worst['identical_at_t1']}/{worst['n_images']}) | {fmt([r['ann_acc'] for r in rs])} | "
            f"{fmt([r['acc'][0] for r in rs])} | {stats.spread([r['conv_error'][0] for r in rs], '.2e')} |")
    return Verdict(NOT_SUPPORTED if bad else SUPPORTED, lines)


EXACT_HEAD = ("| preset | method | leak | seeds | seeds with every image identical at t = 1 | "
              "ANN acc (folded) | SNN acc t = 1 | conv. err t = 1 |\n|---|---|---|---|---|---|---|---|")


def _reference(run: Run) -> tuple[str, list[dict]] | None:
    exact = [r for r in run.records if claims_exactness(r) and r["leak"] == 1.0]
    if not exact:
        return None
    method = next(m for m in run.cfg["methods"] if any(r["method"] == m for r in exact))
    return method, [r for r in exact if r["method"] == method]


def _baselines(run: Run, ref: list[dict]) -> list[tuple[str, list[dict]]]:
    act = ref[0].get("activation")
    order = {m: i for i, m in enumerate(run.cfg["methods"])}
    groups = [(m, rs) for (m, leak), rs in by_setting(run.records).items()
              if leak == 1.0 and (rs[0].get("activation") != act if act else not m.startswith("steprelu"))]
    return sorted(groups, key=lambda g: order.get(g[0], 99))


def _diff(ref: list[dict], rs: list[dict], t_of) -> str:
    """E at t = 1 minus the baseline at its t, per seed, in points (spread over seeds)."""
    by_seed = {r.get("seed", 0): r for r in rs}
    d = []
    for a in ref:
        b = by_seed.get(a.get("seed", 0))
        t = t_of(b) if b is not None else None
        if t is not None:
            d.append(100 * (a["acc"][0] - b["acc"][t - 1]))
    return stats.spread(d, ".2f")


def latency(run: Run) -> Verdict:
    found = _reference(run)
    if found is None:
        return Verdict(NOT_TESTABLE, [f"`{run.name}`: no run of a method that claims exactness."])
    ref_m, ref = found
    bases = _baselines(run, ref)
    if not bases:
        return Verdict(NOT_TESTABLE, [f"`{run.name}`: no baseline converted from another ANN."])
    T = run.cfg["T_max"]
    lines, failed, untestable = [], [], []
    reach = [costs.operating_t(r, 1.0) for r in ref]
    if any(t != 1 for t in reach):
        failed.append(f"{ref_m} within 1 point of its ANN first at t = {reach}")
    for m, rs in bases:
        for t in [b for b in BUDGETS if b <= T]:
            res = stats.paired_at(ref, 1, rs, t)
            mean_diff = sum(a["acc"][0] for a in ref) / len(ref) - sum(r["acc"][t - 1] for r in rs) / len(rs)
            p = "n/a (no per-image correctness)" if res is None else stats.fmt_p(res[2])
            lines.append(f"| {run.name} | {m} | t = {t} | {fmt([r['acc'][t - 1] for r in rs])} | "
                         f"{fmt([r['acc'][0] for r in ref])} | {_diff(ref, rs, lambda r, t=t: t)} | {p} | "
                         f"{res[3] if res else len(rs)} |")
            if res is None:
                untestable.append(t)
            elif not (mean_diff > 0 and res[2] < ALPHA):
                failed.append(f"{m} at t = {t} (difference {100 * mean_diff:+.2f} points, {stats.p_clause(res[2])})")
        op = lambda r: costs.operating_t(r, 1.0)  # noqa: E731
        ts = [op(r) for r in rs]
        res = stats.paired_at(ref, 1, rs, op)
        reached = [r for r in rs if op(r) is not None]
        lines.append(
            f"| {run.name} | {m} | its operating point: t = "
            f"{', '.join(str(t) if t else f'not by {T}' for t in ts)} | "
            f"{fmt([r['acc'][op(r) - 1] for r in reached])} | {fmt([r['acc'][0] for r in ref])} | "
            f"{_diff(ref, rs, op)} | {'n/a (not stored at that t)' if res is None else stats.fmt_p(res[2])} | "
            f"{res[3] if res else len(reached)} |")
    if untestable:
        verdict = NOT_TESTABLE
        why = ("no per-image correctness stored at t = "
               f"{', '.join(map(str, sorted(set(untestable))))}, so no paired test")
    elif failed:
        verdict, why = NOT_SUPPORTED, "fails for " + "; ".join(failed)
    else:
        verdict, why = SUPPORTED, "every comparison holds"
    sub = [costs.substeps(r, 1) for r in ref]
    sub_txt = (f"{stats.spread([s[0] for s in sub if s], '.0f')} binary sub-steps in its largest layer, "
               f"{stats.spread([s[1] for s in sub if s], '.0f')} summed over layers"
               if any(sub) else None)
    cost = (f"{ref_m}'s one step costs {sub_txt}." if sub_txt else
            f"{ref_m}'s binary sub-steps are not recorded by this run.")
    return Verdict(verdict, lines + [f"- `{run.name}`: {verdict} ({why}). {cost}"])


LATENCY_HEAD = ("| preset | baseline | baseline at | baseline acc | E acc at t = 1 | E - baseline "
                "(points, per seed) | McNemar p | seeds |\n|---|---|---|---|---|---|---|---|")


def robustness_claims(run: Run) -> dict[str, Verdict]:
    """Noise and leak verdicts from bench.robustness.claims (helper of the robustness stage)."""
    if run.rows is None:
        why = f"not testable here (no robustness data in {run.name})"
        return {k: Verdict(NOT_TESTABLE, [f"- `{run.name}`: {why}."]) for k in ("noise", "leak")}
    if not seeds.robustness_is_current(run.rows):
        why = (f"not testable here (the robustness.csv of {run.name} predates the current robustness "
               "protocol; a new run renews it)")
        return {k: Verdict(NOT_TESTABLE, [f"- `{run.name}`: {why}."]) for k in ("noise", "leak")}
    out = robustness.claims(run.cfg, run.rows)
    return {k: Verdict(out[k]["verdict"], [f"- `{run.name}`: {out[k]['verdict']}.", ""]  # its own block
                       + [("  " + line) if line else line for line in out[k]["lines"]] + [""])
            for k in ("noise", "leak")}


def caveats(run: Run) -> list[str]:
    """What limits this preset's evidence, read from its preset and records."""
    cfg = run.cfg
    out = []
    acc = cfg.get("trainer", {}).get("accelerator", "?")
    out.append(f"`{run.name}`: {cfg['dataset']} / {cfg['arch']}, {cfg['train']['epochs']} training epochs on "
               f"{acc}, {len(cfg['seeds'])} seed(s): CPU scale, not the paper's networks or schedules.")
    if cfg["dataset"] == "cifar10-jpeg":
        out.append(f"`{run.name}`: cifar10-jpeg is the offline JPEG (quality 75) copy of CIFAR-10, not "
                   "CIFAR-10: its accuracies are not comparable with published CIFAR-10 figures.")
    if any(not r.get("description") for r in run.records):
        out.append(f"`{run.name}`: this run predates the recorded method definitions; its baselines' "
                   "conventions are those of its commit (see its summary.md).")
    if any("correct_at" not in r for r in run.records):
        out.append(f"`{run.name}`: no per-image correctness stored, so no paired test.")
    return out


def verdicts(run: Run) -> dict[str, str]:
    """Each claim's verdict from one run alone (what a user's reproduction recomputes)."""
    rob = robustness_claims(run)
    return {"1. exact conversion at one step": exactness(run).verdict,
            "2. accuracy at low latency": latency(run).verdict,
            "3. robustness to noise": rob["noise"].verdict,
            "4. the effect of leak": rob["leak"].verdict}


def render(runs: list[Run]) -> str:
    """The whole results/README.md."""
    ex = {r.name: exactness(r) for r in runs}
    lat = {r.name: latency(r) for r in runs}
    rob = {r.name: robustness_claims(r) for r in runs}
    v_ex = combine([v.verdict for v in ex.values()])
    v_lat = combine([v.verdict for v in lat.values()])
    v_noise = combine([rob[n]["noise"].verdict for n in rob])
    v_leak = combine([rob[n]["leak"].verdict for n in rob])

    def per(d):
        return ", ".join(f"{n}: {v.verdict}" for n, v in d.items())

    settings = ["| preset | dataset | architecture | seeds | T_max | test images | methods | commit(s) |",
                "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        commits = sorted({(c or "unknown")[:7] for c in (r.manifest.get("git_commits") or
                                                           {"": r.manifest.get("git_commit")}).values()})
        settings.append(f"| [{r.name}]({r.name}/summary.md) | {r.cfg['dataset']} | {r.cfg['arch']} | "
                        f"{r.cfg['seeds']} | {r.cfg['T_max']} | {r.records[0]['n_images'] if r.records else 0} | "
                        f"{', '.join(r.cfg['methods'])} | {', '.join(commits)} |")
    out = [
        "# What this benchmark says about the StepReLU paper's claims", "",
        "Generated by `python -m bench report --all` from the committed data in `results/<preset>/` "
        "(results.json, robustness.csv, manifest.json, or their per-seed copies in seeds/); "
        "`tests/test_results_drift.py` fails if this page differs from what the data give. "
        "The paper: Wang, Cao, Chen, Feng, Wang, \"A New ANN-SNN Conversion Method with High "
        "Accuracy, Low Latency and Good Robustness\", IJCAI 2023.", "",
        "Accuracies in %; a figure over several seeds is mean ± std [95 % Student-t CI]. Over "
        "several presets a claim is not supported when any preset that can test it does not "
        "support it, supported when at least one can and all that can support it, and not "
        "testable here when none can.", "",
        "| claim | verdict | per preset |", "|---|---|---|",
        f"| 1. Exact conversion at one step | **{v_ex}** | {per(ex)} |",
        f"| 2. Accuracy at low latency | **{v_lat}** | {per(lat)} |",
        f"| 3. Robustness to noise | **{v_noise}** | {per({n: rob[n]['noise'] for n in rob})} |",
        f"| 4. The effect of leak | **{v_leak}** | {per({n: rob[n]['leak'] for n in rob})} |", "",
        "## Settings", "", "\n".join(settings), "",
        "## 1. Exact conversion at one step", "",
        "The paper: a StepReLU ANN converted to multi-spike neurons reproduces the ANN at T = 1.", "",
        RULE_EXACT, "", f"**Verdict: {v_ex}.**", "", EXACT_HEAD,
        *[ln for v in ex.values() for ln in v.lines if ln.startswith("|")], "",
        *[ln for v in ex.values() for ln in v.lines if not ln.startswith("|")],
        "## 2. Accuracy at low latency", "",
        "The paper: high accuracy at one time step, where rate-coded conversions need many.", "",
        RULE_LATENCY, "", f"**Verdict: {v_lat}.**", "", LATENCY_HEAD,
        *[ln for v in lat.values() for ln in v.lines if ln.startswith("|")], "",
        *[ln for v in lat.values() for ln in v.lines if not ln.startswith("|")], "",
        "Caveat: one step of a multi-spike neuron may carry up to L spikes; on hardware that only "
        "sends binary spikes it costs that many binary sub-steps (the sub-step figures above, and "
        "the operating-point table of each summary, which also gives ops and energy).", "",
        "## 3. Robustness to noise", "", RULE_ROBUST, "", f"**Verdict: {v_noise}.**", "",
        *[ln for n in rob for ln in rob[n]["noise"].lines], "",
        "## 4. The effect of leak", "", RULE_ROBUST, "", f"**Verdict: {v_leak}.**", "",
        *[ln for n in rob for ln in rob[n]["leak"].lines], "",
        "## Caveats", "", *[f"- {c}" for r in runs for c in caveats(r)], "",
        "## Published figures at paper scale (theirs, not ours)", "",
        "Other people's numbers for the same methods, on full datasets with GPU-scale training; "
        "not comparable with the CPU-scale results above, shown for orientation. Each row names "
        "where the figure was read; what was looked for and not found says so.", "",
        published.table(), "",
    ]
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text
