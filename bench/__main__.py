"""Benchmark CLI.

    python -m bench run --preset smoke [--set key=value ...] [--resume] [--tracking-uri URI]
    python -m bench run --preset paper-cifar10-vgg16 --dry-run --data-dir DIR   (a few batches, CPU)
    python -m bench report --preset smoke [--migrate]   (aggregate finished seeds, no training)
    python -m bench report --all                        (every preset + results/README.md)
    python -m bench list
    python -m bench speed
"""
from __future__ import annotations

import argparse
import json
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
    r.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///store/mlflow.db)")
    r.add_argument("--data-dir", default=None, help="folder holding the dataset (see README, Data)")
    r.add_argument("--out", default=None, help="output folder (default results/<preset>)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--wait", action="store_true",
                   help="if another run holds this preset and seed, wait for it instead of stopping "
                        "(= ANNSNN_LOCK_WAIT=1)")
    r.add_argument("--seeds", default=None, metavar="0,1,2",
                   help="train and evaluate these seeds (= --set seeds=[0,1,2]); the summary gives "
                        "mean, std and a 95 %% CI over them and paired tests between methods")
    r.add_argument("--dry-run", action="store_true",
                   help="2 training batches, then every method at T = 2 on 2 batches, on CPU "
                        "(bench/dry_run.py: --set overrides applied before yours)")
    sub.add_parser("list", help="list presets")
    rp = sub.add_parser("report", help="aggregate the finished seeds of results/<preset>/ and render "
                                       "its tables and plots (no training)")
    rp.add_argument("--preset", default="smoke", help="results/<preset>/ to aggregate")
    rp.add_argument("--all", action="store_true",
                    help="every results/<preset>/, then results/README.md (a verdict per claim) "
                         "and README.md's generated result blocks")
    rp.add_argument("--migrate", action="store_true",
                    help="first move a legacy folder (top-level results.json) into seeds/seed<k>/")
    s = sub.add_parser("speed", help="speed benchmark (writes results/speed.md)")
    s.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke check)")
    args = parser.parse_args(argv)

    from lightning_modules.data_dir import DataUnavailableError, check_data_dir

    from . import presets
    if args.cmd == "list":
        return list_presets()
    if args.cmd == "report":
        return report_command(args)
    if args.cmd == "speed":
        from .perf import speed
        return speed.main(quick=args.quick)
    try:
        # JSON-quoted: a folder named like a YAML value (null, yes, 0x10) stays that folder
        sets = list(args.sets) + ([f"data_dir={json.dumps(args.data_dir)}"] if args.data_dir else [])
        if args.seeds is not None:
            sets.append(f"seeds=[{args.seeds}]")
        if args.dry_run:
            from .run.dry_run import overrides
            sets = overrides(presets.load(args.preset, sets)) + sets
        cfg = presets.load(args.preset, sets)
        check_data_dir(cfg["data_dir"], "data folder {} (--data-dir / data_dir)")  # a typo, not the default search
    except (presets.PresetError, DataUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from pathlib import Path

    from annsnn.simulate import NonFiniteError

    import tracking

    from .run import runner
    try:
        runner.run(cfg, resume=args.resume, tracking_uri=args.tracking_uri,
                   out_dir=Path(args.out) if args.out else None, progress=not args.no_progress,
                   wait=True if args.wait else None)
    except DataUnavailableError as exc:   # missing data: what to do, not where it was noticed
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    except (NonFiniteError,               # bad data: the batch and image, not a traceback
            tracking.StoreError) as exc:  # a tracking store that cannot be repaired: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def report_command(args) -> int:
    """``report``: aggregate one preset's seeds (or all presets) from their files alone."""
    from . import report
    from .report import pages
    try:
        if args.all:
            for path in pages.report_all():
                print(f"[report] wrote {path}")
            return 0
        folder = pages.RESULTS / args.preset
        if not report.is_run(folder):
            print(f"error: results/{args.preset} holds no seeds/seed*/ and no results.json", file=sys.stderr)
            return 2
        if args.migrate:
            moved = report.migrate(folder)
            print(f"[report] moved results/{args.preset} into seeds/: {len(moved)} files")
        print(pages.aggregate(folder))
    except report.LayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def list_presets() -> int:
    """One line per preset: name, dataset, architecture, description (or why it does not load)."""
    from . import presets
    for name in presets.available():
        try:
            cfg = presets.load(name)
        except presets.PresetError as exc:
            print(f"{name:28s} (does not load: {exc})")
            continue
        print(f"{name:28s} {cfg['dataset']:14s} {cfg['arch']:10s} {cfg['description']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
