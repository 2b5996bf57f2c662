"""Benchmark CLI.

    python -m bench run --preset smoke [--set key=value ...] [--resume] [--tracking-uri URI]
                        [--deterministic] [--strict] [--publish]
    python -m bench select --preset cpu-cifar10 [--publish]   (per-method settings chosen on validation)
    python -m bench run --preset paper-cifar10-vgg16 --dry-run --data-dir DIR   (a few batches, CPU)
    python -m bench report --preset smoke [--migrate]   (aggregate finished seeds, no training)
    python -m bench report --all                        (every preset + results/README.md)
    python -m bench export --preset smoke --method maxnorm --out maxnorm.nir   (one SNN of a finished run as NIR)
    python -m bench interop --preset smoke [--seed K] [--publish]   (NIR, snnTorch round trip, NeuroBench)
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
    r.add_argument("--out", default=None,
                   help="output folder (default runs/<preset>/results/; results/<preset>/ with --publish)")
    r.add_argument("--publish", action="store_true",
                   help="maintainers: write the committed reference results/<preset>/ instead of your "
                        "own runs/<preset>/results/ (no reproduction check then)")
    r.add_argument("--strict", action="store_true",
                   help="exit 1 when the run does not reproduce the committed reference (for a lab's CI)")
    r.add_argument("--deterministic", action="store_true",
                   help="pin kernels (oneDNN/MKL/ATen capped at AVX2), threads and algorithms, so runs "
                        "on other CPUs can be bit-identical (= --set deterministic=true)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--wait", action="store_true",
                   help="if another run holds this preset and seed, wait for it instead of stopping "
                        "(= ANNSNN_LOCK_WAIT=1)")
    r.add_argument("--seeds", default=None, metavar="0,1,2",
                   help="train and evaluate these seeds (= --set seeds=[0,1,2]); the summary gives "
                        "mean, std and a 95 %% CI over them and paired tests between methods")
    r.add_argument("--dry-run", action="store_true",
                   help="2 training batches, then every method at T = 2 on 2 batches, on CPU "
                        "(bench/run/dry_run.py: --set overrides applied before yours)")
    sel = sub.add_parser("select", help="train each activation's candidate settings on a selection seed "
                                        "and choose by validation (the preset's selection block)")
    sel.add_argument("--preset", required=True)
    sel.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    sel.add_argument("--out", default=None)
    sel.add_argument("--publish", action="store_true", help="write results/<preset>/selection.*")
    sel.add_argument("--no-progress", action="store_true")
    sub.add_parser("list", help="list presets")
    rp = sub.add_parser("report", help="aggregate the finished seeds of results/<preset>/ and render "
                                       "its tables and plots (no training)")
    rp.add_argument("--preset", default="smoke", help="results/<preset>/ to aggregate")
    rp.add_argument("--all", action="store_true",
                    help="every results/<preset>/, then results/README.md (a verdict per claim) "
                         "and README.md's generated result blocks")
    rp.add_argument("--migrate", action="store_true",
                    help="first move a legacy folder (top-level results.json) into seeds/seed<k>/")
    ex = sub.add_parser("export", help="write one method's SNN of a finished run as a NIR graph "
                                       "(docs/interop.md)")
    ex.add_argument("--preset", required=True, help="the run's preset")
    ex.add_argument("--seed", type=int, default=None, help="the run's seed (default: the preset's first)")
    ex.add_argument("--method", required=True, help="conversion method, as the preset names it")
    ex.add_argument("--leak", type=float, default=1.0)
    ex.add_argument("--leak-mode", default="exp", choices=["exp", "linear"])
    ex.add_argument("--checkpoint", default=None,
                    help="the ANN's checkpoint (default: runs/<preset>/seed<k>/<activation>/last.ckpt)")
    ex.add_argument("--out", required=True, help="the .nir file to write")
    ex.add_argument("--tracking-uri", default=None,
                    help="where the method's MLflow run is (default as for run); the file is logged there")
    ip = sub.add_parser("interop", help="every method of a finished run: NIR export, the same SNN in "
                                        "snnTorch, NeuroBench's metrics (writes interop.json, interop.md)")
    ip.add_argument("--preset", required=True, help="the run's preset")
    ip.add_argument("--seed", type=int, default=None, help="the run's seed (default: the preset's first)")
    ip.add_argument("--images", type=int, default=1000, help="first N test images for the snnTorch round trip")
    ip.add_argument("--neurobench-images", type=int, default=200,
                    help="first N test images for NeuroBench's metrics (NeuroBench is slow)")
    ip.add_argument("--out", default=None,
                    help="results folder (default runs/<preset>/results/; results/<preset>/ with --publish)")
    ip.add_argument("--publish", action="store_true", help="maintainers: write into results/<preset>/")
    ip.add_argument("--tracking-uri", default=None, help="MLflow store of the run (default as for run)")
    s = sub.add_parser("speed", help="speed benchmark (writes results/speed.md)")
    s.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke check)")
    args = parser.parse_args(argv)

    from lightning_modules.data_dir import DataUnavailableError, check_data_dir

    from . import presets
    if args.cmd == "list":
        return list_presets()
    if args.cmd == "report":
        return report_command(args)
    if args.cmd in ("export", "interop"):
        return interop_command(args, argv)
    if args.cmd == "speed":
        from .perf import speed
        return speed.main(quick=args.quick)
    if args.cmd == "select":
        try:
            cfg = presets.load(args.preset, args.sets)
        except presets.PresetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if cfg["deterministic"]:
            code = _deterministic_env(cfg, argv)
            if code is not None:
                return code
        from pathlib import Path

        from .run import select
        select.run(cfg, Path(args.out) if args.out else None, progress=not args.no_progress, publish=args.publish)
        return 0
    try:
        # JSON-quoted: a folder named like a YAML value (null, yes, 0x10) stays that folder
        sets = list(args.sets) + ([f"data_dir={json.dumps(args.data_dir)}"] if args.data_dir else [])
        if args.deterministic:
            sets.append("deterministic=true")
        if args.seeds is not None:
            sets.append(f"seeds=[{parse_seeds(args.seeds)}]")
        if args.dry_run:
            from .run.dry_run import overrides
            sets = overrides(presets.load(args.preset, sets)) + sets
        cfg = presets.load(args.preset, sets)
        check_data_dir(cfg["data_dir"], "data folder {} (--data-dir / data_dir)")  # a typo, not the default search
    except (presets.PresetError, DataUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cfg["deterministic"]:
        code = _deterministic_env(cfg, argv)
        if code is not None:
            return code
    from pathlib import Path

    from annsnn.simulate import NonFiniteError

    import tracking

    from .run import deterministic, preflight, runner
    try:
        runner.run(cfg, resume=args.resume, tracking_uri=args.tracking_uri,
                   out_dir=Path(args.out) if args.out else None, progress=not args.no_progress,
                   wait=True if args.wait else None, publish=args.publish, strict=args.strict)
    except DataUnavailableError as exc:   # missing data: what to do, not where it was noticed
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    except (NonFiniteError,               # bad data: the batch and image, not a traceback
            runner.BadCalibration,        # the same, found before training
            preflight.PreflightError,     # a bad input found before any work: one line
            tracking.StoreError,          # a tracking store that cannot be repaired: one line
            deterministic.NotPinned) as exc:  # --deterministic in a process that loaded torch first
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:             # Ctrl-C: nothing half-written is left (state and store are atomic)
        print("interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


def _deterministic_env(cfg: dict, argv) -> int | None:
    """--deterministic caps the kernels through environment variables that the libraries read
    when torch loads: torch is loaded by now, so start this command again in a fresh
    interpreter with them set (once; None when they already are)."""
    import os

    from .run import deterministic
    threads = int(cfg["trainer"]["threads"] or os.cpu_count() or 1)
    if deterministic.env_is_set(threads) or not _AS_SCRIPT:
        return None   # in-process callers: the runner refuses if the caps are missing
    env = {**os.environ, **deterministic.wanted_env(threads)}
    print(f"[bench] deterministic mode: restarting with {deterministic.wanted_env(threads)}", flush=True)
    os.execve(sys.executable, [sys.executable, "-m", "bench", *(sys.argv[1:] if argv is None else argv)], env)


_AS_SCRIPT = False


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


def interop_command(args, argv=None) -> int:
    """``export`` and ``interop``: argument and preset errors are one line before torch loads.
    A run made in deterministic mode is read again with the same kernel caps."""
    from . import presets
    try:
        cfg = presets.load(args.preset, light=True)
        if args.seed is not None and args.seed < 0:
            raise presets.PresetError(f"--seed must be >= 0, got {args.seed}")
        if args.cmd == "interop":
            for flag, n in (("--images", args.images), ("--neurobench-images", args.neurobench_images)):
                if n < 1:
                    raise presets.PresetError(f"{flag} must be >= 1, got {n}")
    except presets.PresetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seed = cfg["seeds"][0] if args.seed is None else args.seed
    from .run.layout import seed_dir
    state = seed_dir(cfg["name"], seed) / "state.json"
    run_cfg = json.loads(state.read_text())["preset"] if state.exists() else cfg
    if run_cfg.get("deterministic"):
        code = _deterministic_env(run_cfg, argv)
        if code is not None:
            return code
    from pathlib import Path

    from lightning_modules.data_dir import DataUnavailableError

    import tracking

    from . import interop_stage
    from .run import preflight
    try:
        if args.cmd == "export":
            argv = ["--preset", cfg["name"], "--seed", str(seed), "--method", args.method,
                    "--leak", repr(args.leak), "--leak-mode", args.leak_mode, "--out", args.out]
            argv += ["--checkpoint", args.checkpoint] if args.checkpoint else []
            return interop_stage.export_command(cfg, argv, seed, args.method, args.leak, args.out,
                                                args.tracking_uri)
        interop_stage.run(cfg, seed, images=args.images, neurobench_images=args.neurobench_images,
                          out_dir=Path(args.out) if args.out else None, publish=args.publish,
                          tracking_uri=args.tracking_uri)
    except DataUnavailableError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    except (interop_stage.StageError, preflight.PreflightError, tracking.StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def parse_seeds(text: str) -> str:
    """``--seeds 0,1,2`` as a YAML list body; anything else is one line naming the flag."""
    from .presets import PresetError
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        raise PresetError(f"--seeds expects non-negative integers separated by commas, like 0,1,2; got {text!r}")
    return ", ".join(parts)


def list_presets() -> int:
    """One line per preset: name, dataset, architecture, description (or why it does not load).
    Light checks only (no torch): a run checks methods and architecture before any work."""
    from . import presets
    for name in presets.available():
        try:
            cfg = presets.load(name, light=True)
        except presets.PresetError as exc:
            print(f"{name:28s} (does not load: {exc})")
            continue
        print(f"{name:28s} {cfg['dataset']:14s} {cfg['arch']:10s} {cfg['description']}")
    return 0


if __name__ == "__main__":
    _AS_SCRIPT = True
    sys.exit(main())
