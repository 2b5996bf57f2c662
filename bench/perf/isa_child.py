"""One measurement in a fresh interpreter, with this CPU's own kernels or capped at AVX2.

The caps (bench.run.deterministic.ENV) only take effect when set before torch loads, so the
ISA tools (isa_compare, isa_budget) run their measuring half as ``python -m <module> --child``
and read back one tagged JSON line from its output."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.run import deterministic


def run_child(module: str, args: list[str], tag: str, capped: bool, threads: int) -> dict:
    """Run ``python -m module --child *args`` with or without the AVX2 caps and ``threads``
    threads; return the JSON after ``tag`` on its output, or stop with its error output."""
    env = {k: v for k, v in os.environ.items() if k not in deterministic.ENV}
    if capped:
        env.update(deterministic.ENV)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-m", module, "--child", *args, "--threads", str(threads)],
                          capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(tag)), None)
    if proc.returncode or line is None:
        raise SystemExit(f"the {'capped' if capped else 'uncapped'} run failed:\n{proc.stderr[-2000:]}")
    return json.loads(line[len(tag):])
