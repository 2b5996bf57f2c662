"""``python -m bench.perf.gpu_check`` (``./reproduce.sh gpu-check``): the checks only a GPU can
run, in one command, within 10 minutes on one GPU, written to results/gpu-check.md.

1. exactness: tests/test_exactness.py and tests/test_host_sync.py with
   ANNSNN_TEST_DEVICE=cuda (the SNN equals the folded ANN at t = 1 on CUDA arithmetic, and
   the time loop never synchronises with the host);
2. paper-cifar10-vgg16, short: the real preset and code path, a few hundred training steps
   per ANN, every method, T = 16 on 2000 test images (``--set`` overrides; outputs, MLflow
   database and checkpoints go to a temporary folder, not results/);
3. speed: bench/perf/speed.py's simulate(T) / (T x ANN forward) ratios on the GPU.

Each part runs in its own process under a time limit, so a failure or a hang in one is
reported and the others still run. Without CUDA nothing runs: a message, exit status 2.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "results" / "gpu-check.md"
NO_GPU_EXIT = 2

TRAIN_STEPS = 300
PAPER_OVERRIDES = [   # a short run of paper-cifar10-vgg16 (2 and 3 fit in about 5 minutes)
    "seeds=[0]", "train.epochs=1", f"trainer.limit_train_batches={TRAIN_STEPS}",
    "trainer.limit_val_batches=5", "trainer.devices=1", "trainer.num_nodes=1",
    "trainer.strategy=auto", "test_subset=2000", "T_max=16", "summary_t=[1,2,4,8,16]",
    "eval_every_k_epochs=0", "robustness.enabled=false",
]


@dataclass
class Part:
    name: str
    argv: list[str]
    timeout_s: int
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    name: str
    status: str          # "passed", "failed (exit N)" or "timed out after N s"
    seconds: float
    command: str
    tail: str            # the last lines of its output

    @property
    def ok(self) -> bool:
        return self.status == "passed"


def parts(work: Path, data_dir: str | None = None, sets: tuple[str, ...] = ()) -> list[Part]:
    """The three checks, as commands run from the repository root; ``work``: a scratch folder
    for the short run's outputs."""
    py = sys.executable
    run = [py, "-m", "bench", "run", "--preset", "paper-cifar10-vgg16", "--no-progress",
           "--out", str(work / "results"), "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"]
    run += [a for s in PAPER_OVERRIDES + list(sets) for a in ("--set", s)]
    if data_dir:
        run += ["--data-dir", data_dir]
    return [
        Part("exactness on CUDA", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   "tests/test_exactness.py", "tests/test_host_sync.py"],
             timeout_s=150, env={"ANNSNN_TEST_DEVICE": "cuda"}),
        Part(f"paper-cifar10-vgg16, {TRAIN_STEPS} training steps per ANN", run, timeout_s=300,
             env={"ANNSNN_RUNS_DIR": str(work / "runs")}),
        Part("simulate speed on the GPU", [py, "-m", "bench.perf.gpu_check", "--speed-table"], timeout_s=120),
    ]


def run_part(part: Part, cwd: Path = ROOT, tail_lines: int = 25) -> Outcome:
    """Run one part; its status, wall time and the tail of its combined output."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(part.argv, cwd=cwd, env={**os.environ, **part.env}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=part.timeout_s)
        out, status = proc.stdout, "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        status = f"timed out after {part.timeout_s} s"
    seconds = time.perf_counter() - start
    env = " ".join(f"{k}={v}" for k, v in part.env.items())
    command = (env + " " if env else "") + " ".join(part.argv)
    return Outcome(part.name, status, seconds, command, "\n".join(out.rstrip().splitlines()[-tail_lines:]))


def render(outcomes: list[Outcome], meta: dict[str, str]) -> str:
    """results/gpu-check.md: where it ran, then each part's outcome, time and output tail."""
    lines = ["# GPU check", "", "`python -m bench.perf.gpu_check` (`./reproduce.sh gpu-check`).", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| part | outcome | seconds |", "|---|---|---|"]
    lines += [f"| {o.name} | {o.status} | {o.seconds:.1f} |" for o in outcomes]
    total = sum(o.seconds for o in outcomes)
    lines += ["", f"All parts: {'passed' if all(o.ok for o in outcomes) else 'NOT all passed'}, "
                  f"{total:.0f} s in total.", ""]
    for o in outcomes:
        lines += [f"## {o.name}", "", f"`{o.command}`", "", "```", o.tail, "```", ""]
    return "\n".join(lines)


def machine() -> dict[str, str]:
    import torch

    import tracking
    return {"commit": f"`{tracking.git_commit(ignore=[REPORT])}`",
            "GPU": f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, "
                   f"{torch.cuda.device_count()} visible)",
            "versions": ", ".join(f"{k} {v}" for k, v in tracking.versions().items())}


def speed_table() -> str:
    """bench/perf/speed.py's simulate ratios with every tensor on the GPU, as a markdown table."""
    from . import speed
    rows = speed.simulate_ratio(3, (1, 4, 16, 32), device="cuda")
    lines = ["| net | method | T | simulate s | simulate / (T x ANN) |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {m} | {T} | {t:.4f} | {q:.3f} |" for a, m, T, t, q in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="folder holding CIFAR-10 (see README, Data)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra override for the short paper run, e.g. dataset=cifar10-jpeg")
    ap.add_argument("--out", type=Path, default=REPORT, help=f"report file (default {REPORT.relative_to(ROOT)})")
    ap.add_argument("--speed-table", action="store_true", help=argparse.SUPPRESS)  # part 3's worker
    args = ap.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False); "
              "nothing was run. On a CPU machine CI runs the dry runs instead "
              "(python -m bench run --preset P --dry-run).", file=sys.stderr)
        return NO_GPU_EXIT
    if args.speed_table:
        print(speed_table())
        return 0
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        for part in parts(Path(work), args.data_dir, tuple(args.sets)):
            print(f"[gpu-check] {part.name} (limit {part.timeout_s} s) ...", flush=True)
            outcomes.append(run_part(part))
            print(f"[gpu-check] {part.name}: {outcomes[-1].status}, {outcomes[-1].seconds:.1f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(outcomes, machine()))
    print(f"[gpu-check] written {args.out}")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
