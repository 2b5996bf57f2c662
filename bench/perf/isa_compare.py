"""Where do two instruction sets part? ``python -m bench.perf.isa_compare [--steps N]``

Capping the ISA on one machine emulates an older CPU. This runs the smoke preset's first
training steps twice in fresh interpreters, once with the caps of ``--deterministic``
(oneDNN, MKL and ATen at AVX2) and once without, hashing every stage of each step (the
batch, the initial weights, the forward output, the loss, the gradients, the weights after
the update) and then a simulation of the trained net, and names the first stage whose bits
differ. Both runs use the same thread count, so the instruction set is the only difference.
"""
from __future__ import annotations

import argparse
import json
import sys

from bench.perf.isa_child import run_child

TAG = "ISA-COMPARE "
STAGES = ("batch", "initial weights", "forward output", "loss", "gradients", "weights after the step")


def _child(steps: int, threads: int) -> None:
    import torch

    from annsnn import convert, simulate
    from annsnn.metrics import sha256_state, sha256_tensor
    from bench import presets
    from bench.run.runner import ann_module, datamodule
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    cfg = presets.load("smoke", ["deterministic=false"])
    import lightning as L
    L.seed_everything(0, workers=True)
    dm = datamodule(cfg, 0, 1000, "fit")
    module = ann_module(cfg, "steprelu", dm.info).train()
    opt = torch.optim.SGD(module.parameters(), lr=cfg["train"]["lr"], momentum=0.9, nesterov=True)
    out = []
    for i, (x, y) in enumerate(dm.train_dataloader()):
        if i == steps:
            break
        logits = module(x)
        loss = module.loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])
        row = {"batch": sha256_tensor(x), "initial weights": sha256_state(module)}
        opt.step()
        row.update({"forward output": sha256_tensor(logits.detach()), "loss": sha256_tensor(loss.detach()),
                    "gradients": sha256_tensor(grads), "weights after the step": sha256_state(module)})
        out.append(row)
    snn = convert(module.model.eval(), "steprelu")
    res = simulate(snn, dm.test_dataloader(), 4, ann=module.model, progress=False)
    print(TAG + json.dumps({"steps": out, "predictions": sha256_tensor(res.predictions)}))


def _run(capped: bool, steps: int, threads: int) -> dict:
    return run_child("bench.perf.isa_compare", ["--steps", str(steps)], TAG, capped, threads)


def first_difference(a: dict, b: dict) -> str:
    for i, (ra, rb) in enumerate(zip(a["steps"], b["steps"]), start=1):
        for stage in STAGES:
            if ra[stage] != rb[stage]:
                return f"training step {i}: {stage}"
    if a["predictions"] != b["predictions"]:
        return "the simulation after training (predictions)"
    return "none: every hash equal"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf.isa_compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.steps, args.threads)
        return 0
    capped, native = _run(True, args.steps, args.threads), _run(False, args.steps, args.threads)
    from tracking.machine import class_line, machine_class
    print(f"machine: {class_line(machine_class())}; {args.steps} training steps of smoke's StepReLU "
          f"net, {args.threads} threads, deterministic algorithms in both")
    print(f"capped at AVX2 vs this CPU's own kernels: first difference at {first_difference(capped, native)}")
    same = [s for s in STAGES if capped["steps"][0][s] == native["steps"][0][s]]
    print(f"step 1 stages with equal bits: {', '.join(same) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
