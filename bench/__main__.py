"""Benchmark CLI.

    python -m bench run --preset smoke [--set key=value ...] [--resume] [--tracking-uri URI]
    python -m bench run --preset paper-cifar10-vgg16 --dry-run --data-dir DIR   (a few batches, CPU)
    python -m bench list
    python -m bench speed
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a preset end to end")
    r.add_argument("--preset", default="smoke", help="preset name (bench/presets/NAME.yaml) or a YAML path")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset key, dotted for nested keys, value in YAML syntax: "
                        "train.epochs=5, methods=[steprelu,qcfs], test_subset=null")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last checkpoint, into the same MLflow runs")
    r.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db)")
    r.add_argument("--data-dir", default=None, help="folder holding the dataset (see README, Data)")
    r.add_argument("--out", default=None, help="output folder (default results/<preset>)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--seeds", default=None, metavar="0,1,2",
                   help="train and evaluate these seeds (= --set seeds=[0,1,2]); the summary gives "
                        "mean, std and a 95 %% CI over them and paired tests between methods")
    r.add_argument("--dry-run", action="store_true",
                   help="2 training batches, then every method at T = 2 on 2 batches, on CPU "
                        "(bench/dry_run.py: --set overrides applied before yours)")
    sub.add_parser("list", help="list presets")
    rp = sub.add_parser("report", help="re-render results/<preset>/summary.md from its results.json")
    rp.add_argument("--preset", default="smoke")
    s = sub.add_parser("speed", help="speed benchmark (writes results/speed.md)")
    s.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke check)")
    args = parser.parse_args(argv)

    from . import presets
    if args.cmd == "list":
        for name in presets.available():
            cfg = presets.load(name)
            print(f"{name:28s} {cfg['dataset']:14s} {cfg['arch']:10s} {cfg['description']}")
        return 0
    if args.cmd == "report":
        from pathlib import Path

        from . import report
        print(report.rerender(Path(__file__).resolve().parents[1] / "results" / args.preset))
        return 0
    if args.cmd == "speed":
        from . import speed
        return speed.main(quick=args.quick)
    try:
        sets = list(args.sets) + ([f"data_dir={args.data_dir}"] if args.data_dir else [])
        if args.seeds is not None:
            sets.append(f"seeds=[{args.seeds}]")
        if args.dry_run:
            from .dry_run import overrides
            sets = overrides(presets.load(args.preset, sets)) + sets
        cfg = presets.load(args.preset, sets)
    except presets.PresetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from pathlib import Path

    from . import runner
    runner.run(cfg, resume=args.resume, tracking_uri=args.tracking_uri,
               out_dir=Path(args.out) if args.out else None, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
