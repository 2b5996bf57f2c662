"""The trained ANN a study starts from: found by preset and seed (where the benchmark's
runner put it), by MLflow run, or by path; checked against the dataset and the conversion
method with one-line errors; loaded in eval mode on the CPU."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import torch

from annsnn.datasets import DATASETS
from annsnn.recipes import RECIPES, get_recipe

CHECKPOINT_ARTIFACT = "checkpoint/last.ckpt"   # where bench.run.runner logs an ANN's checkpoint


class CheckpointError(ValueError):
    """The checkpoint cannot serve this dataset/method, or is not an ANN checkpoint."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_checkpoint(hp: dict, dataset: str, method: str, where: str) -> None:
    """Clear errors when the checkpoint cannot serve ``dataset`` with ``method`` (a recipe name)."""
    recipe = get_recipe(method)
    if dataset not in DATASETS:
        raise CheckpointError(f"unknown dataset {dataset!r}; valid: {', '.join(sorted(DATASETS))}")
    need = ("arch", "activation", "num_classes", "in_channels", "image_size")
    missing = [k for k in need if k not in hp]
    if missing:
        raise CheckpointError(f"{where} is not an ANNClassifier checkpoint (hyperparameters lack "
                              f"{', '.join(missing)}); pass a checkpoint written by python -m bench")
    info = DATASETS[dataset]
    shape = lambda i: {"in_channels": i.in_channels, "num_classes": i.num_classes, "image_size": i.image_size}
    got = {k: hp[k] for k in ("in_channels", "num_classes", "image_size")}
    has_stats = "mean" in hp and "std" in hp

    def same_stats(i) -> bool:  # models carry their dataset's normalisation (docs/method.md#data)
        close = lambda a, b: len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-3 for x, y in zip(a, b))
        return not has_stats or (close(hp["mean"], i.mean) and close(hp["std"], i.std))

    if got != shape(info) or not same_stats(info):
        fits = [n for n, i in DATASETS.items() if shape(i) == got and same_stats(i)]
        if got != shape(info):
            detail = ", ".join(f"{k}={v}" for k, v in got.items())
            want = ", ".join(f"{k}={v}" for k, v in shape(info).items())
        else:
            detail = f"input normalisation mean={tuple(hp['mean'])} std={tuple(hp['std'])}"
            want = f"mean={info.mean} std={info.std}"
        raise CheckpointError(
            f"checkpoint {where} does not match dataset '{dataset}': the network was built for "
            f"{detail}, but {dataset} has {want}"
            + (f"; it looks like a {' or '.join(fits)} checkpoint: pass --dataset {fits[0]}" if fits
               else "; pass the --dataset it was trained on"))
    act = hp["activation"]["name"] if isinstance(hp["activation"], dict) else str(hp["activation"])
    if recipe.activation != act:
        fits = [m for m, r in RECIPES.items() if r.activation == act]
        raise CheckpointError(f"checkpoint {where} is a {hp['arch']} with activation '{act}', but "
                              f"method '{method}' converts {recipe.activation} networks; "
                              f"use --method {' or '.join(fits) or '(none converts it)'}")


def load_ann(path: Path, dataset: str, method: str) -> tuple[torch.nn.Module, dict]:
    """The trained ANN (eval mode, CPU) and its hyperparameters, after the checks above."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)  # our own Lightning files
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(raw, dict) or "state_dict" not in raw:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    hp = dict(raw.get("hyper_parameters") or {})
    check_checkpoint(hp, dataset, method, str(path))
    from lightning_modules.module import ANNClassifier
    try:
        module = ANNClassifier.load_from_checkpoint(path, map_location="cpu")
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][:4]
        raise CheckpointError(
            f"checkpoint {path} does not match the {hp['arch']} network that annsnn.models.build "
            f"makes now ({' '.join(lines)}); it was probably trained with another version of the "
            "architecture code: retrain it (python -m bench) or check out that version") from None
    return module.model.eval(), hp


def resolve_source(args) -> dict:
    """Checkpoint path, dataset, split seed/fraction and a label, from ``--preset`` (with
    ``--train-seed``), ``--run-id`` or ``--checkpoint``."""
    if args.preset:
        return _from_preset(args)
    if args.run_id:
        return _from_mlflow(args)
    path = Path(args.checkpoint).expanduser().resolve()
    note = None
    if args.split_seed is None:
        note = (f"[study] split seed unknown for {path}: using 0; pass --split-seed with the "
                "training seed (or --preset and --train-seed), or validation images may have been "
                "trained on")
    dataset = args.dataset or "fashion-mnist"
    return {"run_id": None, "experiment": None, "path": path, "dataset": dataset,
            "split_seed": args.split_seed or 0,
            "val_fraction": 0.1 if args.val_fraction is None else args.val_fraction,
            "label": dataset, "tmp": None, "note": note}


def _from_preset(args) -> dict:
    """The ANN ``python -m bench PRESET`` trained with ``--train-seed`` for the method's
    activation; the preset gives its dataset and validation fraction, the seed its split."""
    from bench import presets
    from bench.run import layout
    try:
        cfg = presets.load(args.preset)
    except Exception as e:           # PresetError and OmegaConf's errors: one line
        raise CheckpointError(str(e).splitlines()[0]) from None
    if args.dataset and args.dataset != cfg["dataset"]:
        raise CheckpointError(f"--dataset {args.dataset} but preset {args.preset} trains on {cfg['dataset']}")
    path = layout.checkpoint_path(cfg["name"], args.train_seed, get_recipe(args.method).activation,
                                  args.runs_dir)
    return {"run_id": None, "experiment": None, "path": path, "dataset": cfg["dataset"],
            "split_seed": args.train_seed if args.split_seed is None else args.split_seed,
            "val_fraction": cfg["val_fraction"] if args.val_fraction is None else args.val_fraction,
            "label": cfg["name"], "tmp": None, "note": None}


def _from_mlflow(args) -> dict:
    """The checkpoint artifact of an MLflow run (downloaded to a temporary folder)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    import tracking
    uri = tracking.tracking_uri(args.tracking_uri)
    client = MlflowClient(uri)
    try:
        run = client.get_run(args.run_id)
    except MlflowException as e:
        raise CheckpointError(f"MLflow run {args.run_id} not found at {uri}: "
                              f"{str(e).splitlines()[0]}") from None
    params, tags = run.data.params, run.data.tags
    ds = params.get("dataset") or tags.get("dataset")
    if args.dataset and ds and args.dataset != ds:
        raise CheckpointError(f"--dataset {args.dataset} but MLflow run {args.run_id} trained on {ds}")
    dst = Path(tempfile.mkdtemp(prefix="study-ckpt-"))
    try:
        import mlflow.artifacts
        local = mlflow.artifacts.download_artifacts(run_id=args.run_id, artifact_path=CHECKPOINT_ARTIFACT,
                                                    dst_path=str(dst), tracking_uri=uri)
    except Exception as e:
        raise CheckpointError(f"MLflow run {args.run_id} has no artifact {CHECKPOINT_ARTIFACT} "
                              f"({str(e).splitlines()[0]})") from None
    exp = client.get_experiment(run.info.experiment_id)
    return {"path": Path(local), "dataset": args.dataset or ds or "fashion-mnist",
            "split_seed": int(params.get("seed", 0)) if args.split_seed is None else args.split_seed,
            "val_fraction": float(params.get("val_fraction", 0.1)) if args.val_fraction is None
            else args.val_fraction,
            "label": params.get("preset") or (exp.name if exp else None) or ds,
            "run_id": args.run_id, "experiment": exp.name if exp else None, "tmp": dst, "note": None}
