"""How much longer does a preset take on a CPU without native bf16?
``python -m bench.perf.isa_budget --preset P [--steps N] [--rounds R]``

A preset's budget is measured on one machine. On a CPU with only AVX2, ``precision: auto``
trains in fp32 (bf16 would be emulated) and oneDNN picks other kernels. This times, in fresh
interpreters on this machine, the two things a seed spends its time on: one training step of
the preset's ReLU ANN at its batch size (the precision ``auto`` resolves to), and one
simulated image-step of its max-norm SNN (fp32 always). Each runs once with this CPU's own
kernels and once capped at AVX2 (the ``--deterministic`` caps, which take bf16 away), the two
alternating within each round; the ratios are medians over the rounds. A seed's wall time
under the cap is then about its training time times the first ratio plus the rest times the
second (``--seed-split`` prints that projection from a finished seed's two parts).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from bench.perf.isa_child import run_child

TAG = "ISA-BUDGET "


def _child(preset: str, steps: int, threads: int) -> None:
    import torch

    from annsnn import convert, simulate
    from bench import presets
    from bench.run import precision
    from bench.run.runner import ann_module, datamodule
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = presets.load(preset, [])
    prec, _ = precision.resolve(cfg["trainer"]["precision"], "cpu")
    dm = datamodule(cfg, 0, cfg["eval_batch_size"], "fit")
    module = ann_module(cfg, "relu", dm.info).train()
    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    cl = torch.channels_last if cfg["train"].get("channels_last") else torch.contiguous_format
    batches = iter(dm.train_dataloader())
    times = []
    for i in range(steps + 2):   # two warm-up steps
        x, y = next(batches)
        x = x.to(memory_format=cl)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == precision.BF16):
            loss = module.loss(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    model = module.model.eval()
    snn = convert(model, "maxnorm", dm.calib_dataloader())
    T, loader = 8, dm.test_dataloader()
    n = sum(len(y) for _, y in loader)
    t0 = time.perf_counter()
    simulate(snn, loader, T, progress=False)
    sim = (time.perf_counter() - t0) / (n * T)
    print(TAG + json.dumps({"precision": prec, "train_step_s": statistics.median(times),
                            "sim_image_step_s": sim}))


def _run(preset: str, capped: bool, steps: int, threads: int) -> dict:
    return run_child("bench.perf.isa_budget", ["--preset", preset, "--steps", str(steps)], TAG, capped,
                     threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf.isa_budget", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed-split", type=float, nargs=2, metavar=("TRAIN_S", "REST_S"),
                    help="a finished seed's training seconds and the rest: project it under the cap")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.preset, args.steps, args.threads)
        return 0
    from tracking.machine import class_line, machine_class
    rows = []
    for r in range(args.rounds):
        native = _run(args.preset, False, args.steps, args.threads)
        capped = _run(args.preset, True, args.steps, args.threads)
        rows.append((native, capped))
        print(f"round {r + 1}: native {native}; capped {capped}", flush=True)
    train = statistics.median(c["train_step_s"] / n["train_step_s"] for n, c in rows)
    sim = statistics.median(c["sim_image_step_s"] / n["sim_image_step_s"] for n, c in rows)
    print(f"machine: {class_line(machine_class())}; preset {args.preset}, {args.threads} threads, "
          f"{args.rounds} rounds")
    print(f"training step: {rows[0][0]['precision']} native vs {rows[0][1]['precision']} capped at AVX2: "
          f"x{train:.2f}; simulated image-step (fp32): x{sim:.2f}")
    if args.seed_split:
        t, rest = args.seed_split
        print(f"a seed of {t:.0f} s training + {rest:.0f} s rest here: about "
              f"{(t * train + rest * sim) / 60:.0f} min under the cap (here {(t + rest) / 60:.0f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
