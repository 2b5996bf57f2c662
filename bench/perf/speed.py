"""Speed benchmark: every figure a ratio of two timings taken in the same run, the variants
alternating round by round (median over rounds of the paired ratio).

    python -m bench speed [--quick]      -> prints a table, writes results/speed.md

1. training step (forward + backward + SGD) with StepReLU / with ReLU, same net and batch;
2. StepReLU forward+backward against a per-level masked formulation (one masked
   assignment per level, as the authors' released code does);
3. simulate(T) / (T x one ANN forward) for single- and multi-spike SNNs;
4. images per second of the smoke evaluation stage, and the smoke wall time.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from annsnn import StepReLU, convert, simulate
from annsnn.activations import step_levels
from annsnn.models import build
import tracking

NETS = {"cnn-small": (1, 28, {"width": 16}, 256), "resnet20": (3, 32, {}, 64), "vgg16": (3, 32, {}, 32)}


def _interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time every function once per round, round after round, so that the machine's drift
    (frequency, neighbours) hits all of them alike; returns each one's list of times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return times


def _ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num / den: a paired ratio, robust to drift."""
    return statistics.median(n / d for n, d in zip(num, den))


def _net(arch, act, c, size, kw):
    torch.manual_seed(0)
    return build(arch, act, 10, c, size, mean=[0.5] * c, std=[0.25] * c, **kw)


class GraphStepReLU(StepReLU):
    """StepReLU as autograd's op-by-op graph (the formulation before the fused fixed-theta
    path), kept here to measure what the fusion bought, in the same run."""

    def forward(self, x):
        return self.theta * step_levels(x, self.theta, self.L, self.phi)


def train_step_ratio(repeats):
    """(net, batch, ReLU s, StepReLU s, ratio, op-by-op StepReLU s, its ratio) per net."""
    rows = []
    acts = {"relu": "relu", "steprelu": {"name": "steprelu", "theta": 0.05, "L": 20},
            "graph": lambda: GraphStepReLU(0.05, 20)}
    for arch, (c, size, kw, bs) in NETS.items():
        x, y = torch.rand(bs, c, size, size), torch.randint(0, 10, (bs,))
        steps = {}
        for name, act in acts.items():
            m = _net(arch, act, c, size, kw).train()
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

            def step(m=m, opt=opt):
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(m(x), y).backward()
                opt.step()
            steps[name] = step
        t = _interleaved(steps, repeats)
        med = {k: statistics.median(v) for k, v in t.items()}
        rows.append((arch, bs, med["relu"], med["steprelu"], _ratio(t["steprelu"], t["relu"]),
                     med["graph"], _ratio(t["graph"], t["relu"])))
    return rows


PRECISION_NETS = {"cnn-small": ("cnn-small", 1, 28, {"width": 16}, 128),
                  "vgg-cpu": ("vgg-cpu", 3, 32, {"cfg": [48, "P", 96, "P", 192, "P", 384, "P"]}, 64)}


def precision_ratio(repeats):
    """(net, batch, fp32 s, bf16-mixed s, fp32 / bf16) per net: one training step each, the two
    alternating; what ``trainer.precision: auto`` decides from (bench/run/precision.py)."""
    rows = []
    for name, (arch, c, size, kw, bs) in PRECISION_NETS.items():
        x, y = torch.rand(bs, c, size, size), torch.randint(0, 10, (bs,))
        steps = {}
        for prec in ("fp32", "bf16"):
            m = _net(arch, "relu", c, size, kw).train().to(memory_format=torch.channels_last)
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

            def step(m=m, opt=opt, bf16=prec == "bf16"):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = torch.nn.functional.cross_entropy(m(x), y)
                loss.backward()
                opt.step()
            steps[prec] = step
        t = _interleaved(steps, repeats)
        rows.append((name, bs, statistics.median(t["fp32"]), statistics.median(t["bf16"]),
                     _ratio(t["fp32"], t["bf16"])))
    return rows


def per_level_steprelu(x, theta, L, phi):
    """The straightforward formulation: one masked assignment per level, STE backward."""
    u = x / theta + phi
    y = torch.zeros_like(x)
    for k in range(1, L + 1):
        y[u >= k] = k * theta
    inside = (u >= 0) & (u < L + 1)
    return y.detach() + (x - x.detach()) * inside


def activation_speedup(repeats):
    """Median seconds of forward+backward per formulation, each one's paired ratio to the
    fused StepReLU (key ``<name>/steprelu``), and the fused one's to ReLU."""
    x0 = torch.randn(128, 64, 32, 32) * 0.5
    act = StepReLU(0.05, 20)
    graph = GraphStepReLU(0.05, 20)
    fns = {}
    for name, f in (("steprelu", act), ("graph", graph), ("relu", torch.relu),
                    ("per-level", lambda x: per_level_steprelu(x, act.theta, 20, 0.0))):
        x = x0.clone().requires_grad_(True)

        def run(f=f, x=x):
            x.grad = None
            f(x).sum().backward()
        fns[name] = run
    t = _interleaved(fns, repeats)
    out = {k: statistics.median(v) for k, v in t.items()}
    out.update({f"{k}/steprelu": _ratio(v, t["steprelu"]) for k, v in t.items()})
    out["steprelu/relu"] = _ratio(t["steprelu"], t["relu"])
    return out


def simulate_ratio(repeats, Ts=(1, 4, 16, 32), device="cpu"):
    """``device``: where the nets run (bench/perf/gpu_check.py passes "cuda"); the loader stays on
    the CPU, as a data pipeline's does, and the ANN's timing waits for the device."""
    rows = []
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for arch, (c, size, kw, bs) in NETS.items():
        ann = _net(arch, {"name": "steprelu", "theta": 0.05, "L": 20}, c, size, kw).eval().to(device)
        x = torch.rand(bs, c, size, size)
        xd = x.to(device)
        loader = DataLoader(TensorDataset(x, torch.zeros(bs, dtype=torch.long)), batch_size=bs)
        variants = [("steprelu", None), ("steprelu-single", None), ("steprelu", False)]
        for method, layout in variants:
            snn = convert(ann, method)
            label = method if layout is None else f"{method}, NCHW"
            for T in Ts:
                def ann_T(T=T):
                    with torch.inference_mode():
                        for _ in range(T):
                            ann(xd)
                    sync()

                def sim(T=T, snn=snn, layout=layout):
                    simulate(snn, loader, T, progress=False, channels_last=layout)
                t = _interleaved({"sim": sim, "ann": ann_T}, max(3, repeats // 2))
                rows.append((arch, label, T, statistics.median(t["sim"]), _ratio(t["sim"], t["ann"])))
    return rows


def smoke_stage():
    root = tracking.PROJECT_ROOT
    man = root / "results" / "smoke" / "manifest.json"
    seed = json.loads(man.read_text())["seeds"][0] if man.exists() else 0
    ckpt = root / "runs" / "smoke" / f"seed{seed}" / "steprelu" / "last.ckpt"
    out = {"smoke_wall_s": json.loads(man.read_text())["wall_seconds"] if man.exists() else None}
    if ckpt.exists():
        from lightning_modules.data import build_datamodule
        from lightning_modules.module import ANNClassifier
        ann = ANNClassifier.load_from_checkpoint(ckpt, map_location="cpu").model.eval()
        dm = build_datamodule("fashion-mnist", eval_batch_size=500)
        dm.prepare_data()
        dm.setup("test")
        snn = convert(ann, "steprelu")
        t = time.perf_counter()
        res = simulate(snn, dm.test_dataloader(), 32, progress=False)
        dt = time.perf_counter() - t
        out.update(smoke_images=res.n_images, smoke_eval_s=dt, smoke_images_per_s=res.n_images / dt)
    return out


def main(quick: bool = False) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    reps = 3 if quick else 7
    train = train_step_ratio(reps)
    act = activation_speedup(reps)
    sim = simulate_ratio(reps, (1, 4) if quick else (1, 4, 16, 32))
    prec = precision_ratio(reps)
    smoke = smoke_stage()
    from bench.run.precision import resolve
    from tracking.machine import class_line, machine_class
    lines = ["# Speed", "",
             f"Machine: {class_line(machine_class())} ({platform.platform()}); commit "
             f"`{tracking.git_commit(ignore=[tracking.PROJECT_ROOT / 'results' / 'speed.md'])}`; versions {json.dumps(tracking.versions())}. Every figure is a "
             f"median over {reps} rounds of a paired ratio, the timed variants alternating "
             f"within each round, all in this one run.", "",
             "## 1. Training step, StepReLU / ReLU (target <= 1.15)", "",
             "StepReLU is the fused fixed-theta path; the last two columns time the same net with "
             "the op-by-op autograd formulation it replaced (same values bit for bit).", "",
             "| net | batch | ReLU s | StepReLU s | ratio | op-by-op StepReLU s | its ratio |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {r:.4f} | {s:.4f} | {q:.3f} | {g:.4f} | {gq:.3f} |"
              for a, b, r, s, q, g, gq in train]
    lines += ["", "## 2. StepReLU forward+backward vs per-level masked formulation (L = 20)", "",
              f"fused: {act['steprelu']:.4f} s, per-level: {act['per-level']:.4f} s, "
              f"speed-up {act['per-level/steprelu']:.2f}x; op-by-op graph "
              f"{act['graph']:.4f} s ({act['graph/steprelu']:.2f}x the fused path); ReLU "
              f"{act['relu']:.4f} s (fused / ReLU = {act['steprelu/relu']:.2f})", "",
              "## 3. simulate(T) / (T x ANN forward) (target <= 1.10 for T >= 4)", "",
              "simulate runs image batches channels-last on a CPU by default (its layout choice); "
              "the ANN forward it is divided by runs in PyTorch's default layout (NCHW). "
              "Rows marked NCHW pass `channels_last=False`, so both run in NCHW: where a "
              "network's own convolutions are slower channels-last on this CPU, the gap between "
              "the two rows is that layout cost, not the SNN's.", "",
              "| net | method | T | simulate s | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {m} | {T} | {t:.4f} | {q:.3f} |" for a, m, T, t, q in sim]
    used, why = resolve("auto", "cpu")
    lines += ["", "## 4. Training precision: fp32 / bf16-mixed step time on this machine", "",
              f"`trainer.precision: auto` chooses {used} here ({why}). A ratio above 1: bf16 is faster; "
              "on a CPU that emulates bf16 it falls far below 1 (measured 1/14 on an AVX2-only machine).", "",
              "| net | batch | fp32 s | bf16-mixed s | fp32 / bf16 |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {b} | {f:.4f} | {h:.4f} | {q:.2f} |" for n, b, f, h, q in prec]
    lines += ["", "## 5. Smoke evaluation stage", ""]
    if "smoke_images_per_s" in smoke:
        lines.append(f"steprelu SNN on the trained smoke model, {smoke['smoke_images']} test images x 32 steps: "
                     f"{smoke['smoke_eval_s']:.1f} s = {smoke['smoke_images_per_s']:.0f} images/s")
    else:
        lines.append("no smoke checkpoint found (run ./reproduce.sh first)")
    lines.append(f"smoke preset wall time (results/smoke/manifest.json): {smoke['smoke_wall_s']} s")
    text = "\n".join(lines) + "\n"
    print(text)
    if not quick:
        out = tracking.PROJECT_ROOT / "results" / "speed.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text)
        print(f"written {out}")
    return 0
