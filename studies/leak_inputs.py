"""What a leak study reads and runs: the trained ANN with its validation (and calibration)
images, and one SNN run with a chosen leak, phi and T; shared by the search and the report."""
from __future__ import annotations

import json
import os
import shutil
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from annsnn.activations import check_phi
from annsnn.convert import convert
from annsnn.neurons import spiking_layers
from annsnn.recipes import get_recipe
from annsnn.simulate import simulate

from . import checkpoint as ck
from . import storage as st


def run_snn(ann, method: str, leak: float, phi: float, T: int, loader, perturb, seed: int,
            calib_loader=None, with_ann: bool = False):
    """Convert with ``method`` and ``leak``, give every neuron ``phi``, simulate T steps."""
    snn = convert(ann, method, calib_loader, leak=leak)
    for _, m in spiking_layers(snn):
        m.phi = check_phi(phi)
    return simulate(snn, loader, T, ann=ann if with_ann else None, perturb=perturb, seed=seed,
                    progress=False)


def method_phi(ann, method: str, calib_loader) -> float:
    """The phi the method's own neuron starts with (the exact one for steprelu)."""
    return float(spiking_layers(convert(ann, method, calib_loader))[0][1].phi)


def take(loader, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images and labels of ``loader`` (all with None)."""
    xs, ys, have = [], [], 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        have += len(y)
        if n is not None and have >= n:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:n], y[:n]) if n is not None else (x, y)


def datamodule(meta: dict, args, test_subset: int | None = None):
    from lightning_modules.data import build_datamodule
    dm = build_datamodule(meta["dataset"], data_dir=args.data_dir, batch_size=args.batch_size,
                          val_fraction=meta["val_fraction"], seed=meta["split_seed"],
                          calib_size=args.calib_size, eval_batch_size=args.batch_size,
                          test_subset=test_subset)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def prepare_inputs(args) -> dict:
    """Everything a worker needs: the ANN, the validation subset, calibration images, metadata."""
    src = ck.resolve_source(args)
    try:
        ann, hp = ck.load_ann(src["path"], src["dataset"], args.method)
        digest = ck.sha256(src["path"])
    finally:
        if src.get("tmp"):
            shutil.rmtree(src["tmp"], ignore_errors=True)
    if src.get("note"):
        print(src["note"], file=sys.stderr)
    meta = {k: (str(v) if k == "path" else v) for k, v in src.items() if k not in ("tmp", "note")}
    meta.update(sha256=digest, hparams=json.loads(json.dumps(hp, default=str)))
    if src.get("run_id"):   # the download was temporary: name the artifact instead
        meta["path"] = f"runs:/{src['run_id']}/{ck.CHECKPOINT_ARTIFACT}"
    else:                   # relative to the project, so committed reports name no machine
        meta["path"] = os.path.relpath(meta["path"], st.PROJECT_ROOT)
    dm = datamodule(meta, args)
    val_x, val_y = take(dm.val_dataloader(), args.val_subset)
    calib = take(dm.calib_dataloader(), None) if get_recipe(args.method).needs_calibration else None
    meta.update(n_val=len(val_y), n_val_split=len(dm.val_set), data_source=str(getattr(dm, "source", "")))
    return {"ann": ann, "val": (val_x, val_y), "calib": calib, "meta": meta}


def loader_of(xy, batch_size: int) -> DataLoader | None:
    return None if xy is None else DataLoader(TensorDataset(*xy), batch_size=batch_size, shuffle=False)
