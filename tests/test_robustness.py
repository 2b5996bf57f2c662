"""The robustness stage (bench/robustness/, docs/method.md#robustness): row schema, rendering as a pure function of the
CSV, robust accuracy as a per-image minimum, the operating-point choice, the leak rows sharing
the noise draws of leak 1, the MLflow curves and the figures. Tiny nets, seconds."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from annsnn import models
from bench import presets, robustness
from bench.robustness.measure import choose_op, evaluate, points
from bench.robustness.groups import AUTHORS, robust_rows
from bench.robustness.verdicts import leak_comparisons
from annsnn.metrics import pack_bits
from bench.robustness.stats import bits, paired

METHODS = ["robustnorm", "qcfs", "steprelu"]
TINY = ["robustness.enabled=true", "robustness.test_subset=24", "robustness.noise_images=24",
        "robustness.transfer_images=12", "robustness.snn_attack_images=6", "robustness.leak_images=24",
        "robustness.sanity_images=6", "robustness.T_max=6", "robustness.eps=[4, 8]",
        "robustness.pgd_steps=2", "robustness.pgd_restarts=1", "robustness.snn_pgd_steps=2",
        "robustness.snn_pgd_restarts=1", "robustness.gaussian_sigma=[0.1]", "robustness.salt_pepper_s=[0.9]",
        "robustness.leaks=[1.0, 0.9]", "robustness.leak_modes=[exp, linear]",
        "robustness.sources=[relu, qcfs, steprelu]", "robustness.ann_attacks=[fgsm, pgd]",
        "robustness.snn_points=[T_1, T_4, T_op]", "robustness.snn_pgd_T_max=2", "robustness.methods=[]",
        "robustness.leak_T=[2, 4]", "robustness.leak_methods=[]", "deterministic=false",
        f"methods=[{', '.join(METHODS)}]", "eval_batch_size=8", "T_max=4"]


class FakeDM:
    def __init__(self, n=24, size=8):
        g = torch.Generator().manual_seed(0)   # four classes, each a bright quadrant, plus noise
        self.y = torch.arange(n) % 4
        self.x = 0.35 * torch.rand(n, 1, size, size, generator=g)
        h = size // 2
        for i, c in enumerate(self.y.tolist()):
            self.x[i, 0, (c // 2) * h:(c // 2 + 1) * h, (c % 2) * h:(c % 2 + 1) * h] += 0.5

    def test_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=8)

    def calib_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=8)


def _anns():
    torch.manual_seed(0)
    out = {}
    for act in ("relu", "qcfs", "steprelu"):
        knobs = {"relu": {}, "qcfs": {"L": 4}, "steprelu": {"theta": 0.2, "L": 4}}[act]
        net = models.build("cnn-small", {"name": act, **knobs}, 10, 1, 8, width=4)
        dm = FakeDM()   # a few Adam steps: nets that see their input, so noise and attacks change answers
        opt = torch.optim.Adam(net.parameters(), lr=0.02)
        for _ in range(30):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(dm.x), dm.y).backward()
            opt.step()
        out[act] = net.eval()
    return out


@pytest.fixture(scope="module")
def stage():
    cfg = presets.load("smoke", TINY)
    rows = evaluate(cfg, _anns(), FakeDM(), 0, records=[], progress=False)
    return cfg, rows


def _row(**kw):
    base = dict(seed=0, family="clean", method="m", source="-", attack="clean", mode="-", level=0.0, leak=1.0,
                leak_mode="-", point="T_1", T=1, n=0, acc=0.0, correct="", note="", wall_s=1.0)
    base.update(kw)
    if "ok" in kw:
        ok = np.asarray(base.pop("ok"), dtype=bool)
        base.update(n=len(ok), acc=float(ok.mean()), correct=pack_bits(ok))
    return base


def test_rows_follow_the_schema_and_carry_per_image_correctness(stage):
    cfg, rows = stage
    assert {r["family"] for r in rows} == {"clean", "noise", "ann", "transfer", "snn_pgd", "leak", "sanity"}
    san = [r for r in rows if r["family"] == "sanity"]
    assert len(san) == 3 * len(METHODS) and all(r["note"].startswith(("pass: ", "FAIL: ")) for r in san)
    for r in rows:
        assert list(r) == robustness.FIELDS
        if r["n"] and r["family"] != "sanity":   # sanity rows hold a check's value, no images
            assert bits(r).mean() == pytest.approx(r["acc"]) and len(bits(r)) == r["n"]
    for m in METHODS:
        pts = {r["point"]: r["T"] for r in rows if r["family"] == "clean" and r["method"] == m}
        assert set(pts) == {"T_1", "T_4", "T_op"} and pts["T_1"] == 1 and pts["T_4"] == 4
    # eps in units of 1/255, each part on the head of the pool at its own size
    assert {r["level"] for r in rows if r["family"] in ("transfer", "snn_pgd")} == {4.0, 8.0}
    assert {r["n"] for r in rows if r["family"] == "transfer"} == {12}
    assert {r["n"] for r in rows if r["family"] == "snn_pgd" and r["T"] <= 2} == {6}
    assert all(r["n"] == 0 and r["note"].startswith("not run") for r in rows
               if r["family"] == "snn_pgd" and r["T"] > 2)   # snn_pgd_T_max = 2: stated, not hidden
    assert {r["source"] for r in rows if r["family"] == "transfer"} == {"relu", "qcfs", "steprelu"}
    # leak 1 once (the same neuron in both modes), leak 0.9 in both modes
    assert {(r["leak"], r["leak_mode"]) for r in rows if r["family"] == "leak"} == \
        {(1.0, "-"), (0.9, "exp"), (0.9, "linear")}
    assert len({r["wall_s"] for r in rows}) == 1 and rows[0]["wall_s"] > 0


def test_noise_is_paired_across_parts(stage):
    """The leak study's leak-1 rows and the noise part's rows at the same T, on the same images
    (TINY: both use the 24-image head), are the same measurement: clean alike, and under the
    authors' noise the same draws per (seed, image, step)."""
    cfg, rows = stage
    twins = 0
    for r in rows:
        if r["family"] == "leak" and r["leak"] == 1.0 and r["T"] == 4:
            fam = "clean" if r["attack"] == "clean" else "noise"
            twin = [s for s in rows if s["family"] == fam and s["method"] == r["method"] and s["point"] == "T_4"
                    and s["attack"] == r["attack"]]
            assert len(twin) == 1 and twin[0]["correct"] == r["correct"]
            twins += 1
    assert twins == 2 * len(METHODS)   # clean and AddNoise, every method (leak_methods = [] in TINY)


def test_render_is_a_function_of_the_csv(stage, tmp_path):
    cfg, rows = stage
    files = robustness.write(cfg, rows, tmp_path)
    back = robustness.read_rows(tmp_path / "robustness.csv")
    assert len(back) == len(rows)
    for a, b in zip(rows, back):
        assert {k: v for k, v in a.items() if not (isinstance(v, float) and math.isnan(v))} == \
            {k: v for k, v in b.items() if not (isinstance(v, float) and math.isnan(v))}
    text = (tmp_path / "robustness.md").read_text()
    assert text == robustness.render(cfg, back)
    for section in ("## Operating points", "## Clean and robust accuracy", "## Headline: PGD crafted on the relu",
                    "## White-box PGD through time", "## Transfer matrix", "## Noise", "## Leak",
                    "### Under clean images", "### Under the authors' noise AddNoise(0.95, 0.5)",
                    "## Compared with steprelu under attack", "## Gradient-masking sanity checks"):
        assert section in text
    assert "95 % CI half-width" in text and "Stage wall time per seed: seed 0:" in text
    pngs = [f for f in files if f.suffix == ".png"]
    assert sorted(f.name for f in pngs) == sorted(["robustness_eps.png", "robustness_transfer.png",
                                                   "robustness_noise.png", "robustness_leak.png"])
    for f in pngs:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000


def test_robust_accuracy_is_the_per_image_minimum_over_attacks():
    """Each attack alone leaves 3 of 4 images correct, but on different images: robust is 2 of 4,
    not the 3 of 4 that a minimum over accuracies would give."""
    rows = [_row(ok=[1, 1, 1, 1, 1, 1]),
            _row(family="transfer", source="relu", attack="pgd", level=8.0, ok=[0, 1, 1, 1]),
            _row(family="transfer", source="qcfs", attack="pgd", level=8.0, ok=[1, 0, 1, 1]),
            _row(family="snn_pgd", attack="pgd", level=8.0, ok=[1, 1, 1, 1, 0]),
            _row(family="transfer", source="relu", attack="pgd", level=4.0, ok=[1, 1, 1, 1])]
    rob = {r["level"]: r for r in robust_rows(rows)}
    assert rob[8.0]["n"] == 4 and rob[8.0]["acc"] == 0.5 and rob[8.0]["whitebox"]
    assert rob[4.0]["acc"] == 1.0 and not rob[4.0]["whitebox"]
    # a clean mistake is never robust
    rows[0] = _row(ok=[1, 1, 0, 1, 1, 1])
    assert {r["level"]: r for r in robust_rows(rows)}[8.0]["acc"] == 0.25


def test_operating_point_from_records_else_a_longer_simulation_else_T_max():
    rc = {"op_gap": 1.0, "T_max": 8, "T_fixed": [1, 4]}
    rec = {"val_ann_acc": 0.90, "val_acc": [0.5, 0.85, 0.895, 0.9], "T_max": 4}   # chosen on validation
    calls = []

    def sim(T):
        calls.append(T)
        return [0.1] * 5 + [0.895, 0.9, 0.9], 0.9

    assert choose_op(rec, rc, sim)[0] == 3 and not calls            # within 1 point at t = 3
    rec2 = dict(rec, val_acc=[0.5, 0.6, 0.7, 0.8])
    t, note = choose_op(rec2, rc, sim)
    assert (t, calls) == (6, [8]) and "validation simulation" in note  # not by 4: simulate to 8
    assert choose_op(rec2, rc, lambda T: ([0.1] * T, 0.9))[0] == 8    # never: T_max
    assert choose_op(rec2, dict(rc, T_max=4), sim)[0] == 4 and calls == [8]  # records already went as far
    assert points(rc, 6) == {"T_1": 1, "T_4": 4, "T_op": 6}


def test_log_to_mlflow_writes_each_curve_with_its_strength_as_step(stage, tmp_path):
    from mlflow.tracking import MlflowClient
    cfg, rows = stage
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.create_experiment("rob", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp).info.run_id
    robustness.log_to_mlflow(client, run, cfg, rows, "qcfs", tmp_path / "qcfs")

    def steps(key):
        return sorted(m.step for m in client.get_metric_history(run, key))

    assert steps("rob/pgd_snn/T_1") == [4, 8]                      # eps in 1/255
    assert steps("rob/transfer_relu_pgd/T_op") == [4, 8]
    assert steps("rob/robust/T_4") == [4, 8]
    assert steps("rob/noise_sp_dynamic/T_op") == [90]              # s in percent
    assert steps("rob/noise_gauss_static/T_1") == [10]             # sigma in percent
    assert steps("rob/noise_authors/T_1") == [95]
    assert steps("rob/leak_exp_authors/T_4") == [90, 100]          # leak in percent
    assert steps("rob/leak_linear_clean/T_2") == [90, 100]
    assert steps("rob/clean/T_op") == [0]
    v = client.get_metric_history(run, "rob/clean/T_1")[0].value
    assert v == next(r["acc"] for r in rows if r["method"] == "qcfs" and r["family"] == "clean" and r["point"] == "T_1")
    pgd8 = next(m.value for m in client.get_metric_history(run, "rob/pgd_snn/T_1") if m.step == 8)
    assert pgd8 == next(r["acc"] for r in rows if r["method"] == "qcfs" and r["family"] == "snn_pgd"
                        and r["point"] == "T_1" and r["level"] == 8.0)
    arts = {a.path for a in client.list_artifacts(run)}
    assert {"robustness_qcfs.json", "robustness.csv", "robustness.md", "robustness_eps.png",
            "robustness_leak.png"} <= arts


def test_claims_give_a_verdict_with_numbers(stage):
    cfg, rows = stage
    cl = robustness.claims(cfg, rows)
    assert set(cl) == {"noise", "adversarial", "leak_clean", "leak_noise"}
    for c in cl.values():
        assert c.verdict in ("supported", "not supported", "not testable here") and c.why
    assert cl["noise"].k == 4 and any("retention" in line for line in cl["noise"].lines)   # robustnorm, qcfs
    assert cl["leak_clean"].k == cl["leak_noise"].k == 12   # 3 methods x 0.9 x {exp, linear} x T in {2, 4}
    assert robustness.claims(dict(cfg, methods=["qcfs"]), [r for r in rows if r["method"] == "qcfs"])["noise"] \
        .verdict == "not testable here"


def test_transfer_images_come_from_each_source_ann_for_every_method():
    """Per source ANN and attack, every method's SNN runs on the images crafted on that
    source (recomputed here: FGSM is deterministic); different sources give different images,
    so images crafted on one fixed ANN whatever the source would fail this."""
    from annsnn import convert
    from annsnn.attacks import fgsm
    from annsnn.recipes import get_recipe
    from bench.robustness import measure as robust_eval

    cfg = presets.load("smoke", TINY + ["robustness.ann_attacks=[fgsm]", "robustness.eps=[8]"])
    anns = _anns()
    st = robust_eval._Stage(cfg, anns, FakeDM(), 0, [], progress=False)
    assert st.methods == METHODS and cfg["robustness"]["sources"] == ["relu", "qcfs", "steprelu"]
    for m in st.methods:
        st.snns[m] = convert(anns[get_recipe(m).activation], m, st.calib)
        st.pts[m] = {"T_1": 1}
    real_sim, real_add_sim, last, seen = st.sim, st.add_sim, {}, {}

    def sim(snn, x, y, T, **kw):
        last["x"] = x.clone()
        return real_sim(snn, x, y, T, **kw)

    def add_sim(res, method, pts=None, **kw):
        if kw.get("family") == "transfer":
            seen[(kw["source"], method)] = last["x"]
        return real_add_sim(res, method, pts, **kw)
    st.sim, st.add_sim = sim, add_sim

    for src in st.sources():
        st.transfer(src, "fgsm", 8)
    x, y = st.head("transfer_images")
    want = {src: torch.cat([fgsm(anns[src], xb, yb, 8 / 255) for xb, yb in robust_eval._loader(x, y, st.bs)])
            for src in ("relu", "qcfs", "steprelu")}
    assert sorted(seen) == sorted((s, m) for s in want for m in METHODS)
    wrong = [(src, m) for (src, m), xa in seen.items() if not torch.equal(xa, want[src])]
    assert not wrong, f"(source, method) whose SNN did not run on the source's images: {wrong}"
    srcs = list(want)
    assert all(not torch.equal(want[a], want[b]) for i, a in enumerate(srcs) for b in srcs[i + 1:])
    assert all(not torch.equal(w, x) for w in want.values())


def test_leak_rows_share_the_noise_draws_of_leak_1(monkeypatch):
    """Under the authors' noise, every leak < 1 simulation gets exactly the noisy images leak 1
    gets (the stage's seed, per image and step): its difference from leak 1 is then the leak's
    alone. Leak rows drawn from another seed would see other noise, and this test fails."""
    from annsnn import convert, spiking_layers
    from annsnn.recipes import get_recipe
    from bench.robustness import measure as robust_eval

    cfg = presets.load("smoke", TINY + ["robustness.leak_methods=[steprelu]", "robustness.leak_T=[2]"])
    anns = _anns()
    st = robust_eval._Stage(cfg, anns, FakeDM(), 3, [], progress=False)
    for m in st.methods:
        st.snns[m] = convert(anns[get_recipe(m).activation], m, st.calib)
    real, seen = robust_eval.simulate, []

    class Recording:
        def __init__(self, inner, drawn):
            self.inner, self.drawn, self.dynamic = inner, drawn, inner.dynamic

        def __call__(self, x, generator=None):
            out = self.inner(x, generator)
            self.drawn.append(out.clone())
            return out

    def simulate(snn, loader, T, ann=None, perturb=None, seed=0, progress=False):
        drawn = []
        res = real(snn, loader, T, ann=ann, perturb=Recording(perturb, drawn) if perturb else None, seed=seed,
                   progress=progress)
        leak = {float(m.leak) for _, m in spiking_layers(snn)}
        seen.append((leak.pop(), seed, torch.cat(drawn) if drawn else None))
        return res
    monkeypatch.setattr(robust_eval, "simulate", simulate)

    st.leak("steprelu")
    noisy = [(leak, seed, x) for leak, seed, x in seen if x is not None]
    assert sorted(leak for leak, _, _ in noisy) == [0.9, 0.9, 1.0]      # leak 1, 0.9 exp, 0.9 linear
    ref = next(x for leak, _, x in noisy if leak == 1.0)
    x_clean, _ = st.head("leak_images")
    assert not torch.equal(ref, x_clean)                              # the noise did change images
    for leak, seed, x in noisy:
        assert seed == 3 and torch.equal(x, ref), f"leak {leak} saw other noise draws than leak 1"
    # the rows: each leak against leak 1, clean and under the noise, at every T of leak_T, one image count
    rows = [r for r in st.rows if r["family"] == "leak"]
    assert {(r["attack"], r["point"], r["leak"], r["leak_mode"]) for r in rows} == {
        (a, "T_2", lv, lm) for a in ("clean", AUTHORS) for lv, lm in ((1.0, "-"), (0.9, "exp"), (0.9, "linear"))}
    assert len({r["n"] for r in rows}) == 1


def test_every_lazy_name_stays_a_function_after_its_submodule_is_imported():
    """A submodule named like a lazy function replaces it on the package once imported: the
    second seed of a run then called a module (TypeError). Import every submodule, then look."""
    import importlib
    import pkgutil
    import types

    from bench import robustness
    for info in pkgutil.iter_modules(robustness.__path__):
        importlib.import_module(f"bench.robustness.{info.name}")
    for name in robustness._LAZY:
        assert not isinstance(getattr(robustness, name), types.ModuleType), name
        assert callable(getattr(robustness, name)), name


def test_an_interrupted_stage_resumes_without_measuring_a_kept_unit_again(stage, monkeypatch):
    """Stop the stage after its fifth unit (a method's noise sweep: the clean units, which fix
    the operating points, lie behind it), keep the units as the state file does (JSON), and
    resume: the rows equal an uninterrupted stage's, and no kept unit is measured twice."""
    import json

    from bench.robustness import measure as robust_eval
    cfg, whole = stage

    class Stop(Exception):
        pass

    kept, done = {}, []

    def stop_after_five(key):
        done.append(key)
        if len(done) == 5:
            raise Stop
    with pytest.raises(Stop):
        evaluate(cfg, _anns(), FakeDM(), 0, records=[], progress=False, kept=kept, on_unit=stop_after_five)
    assert done[-1].startswith("noise/") and len(kept) == 5
    kept = json.loads(json.dumps(kept))
    measured, real = [], robust_eval._Stage.run

    def run(self, key, measure, kept_units):
        def recorded():
            measured.append(key)
            return measure()
        return real(self, key, recorded, kept_units)
    monkeypatch.setattr(robust_eval._Stage, "run", run)
    rows = evaluate(cfg, _anns(), FakeDM(), 0, records=[], progress=False, kept=kept)
    assert not set(measured) & set(done) and len(measured) + 5 == len(kept)
    def strip(rs):   # as text: NaN (a white-box row not run) equals itself there
        return json.dumps([{k: v for k, v in r.items() if k != "wall_s"} for r in rs])
    assert strip(rows) == strip(whole)
    assert rows[0]["wall_s"] == round(sum(u["wall_s"] for u in kept.values()), 1)
