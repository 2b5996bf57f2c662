"""``export``: a trained checkpoint -> converted SNN -> NIR file, as the bench CLI will call it:

    export_main(["--preset", "smoke", "--seed", "0", "--method", "maxnorm",
                 "--checkpoint", "runs/smoke/seed0/relu/last.ckpt", "--out", "maxnorm.nir"],
                calib_loader_for=...)

The checkpoint is the runner's Lightning checkpoint of the ANN; it holds the model's build
arguments (``hyper_parameters``) and weights (``state_dict`` under ``model.``), so the network
is rebuilt with ``annsnn.models.build`` without Lightning. Methods that calibrate their
thresholds (maxnorm, robustnorm, opi) need the preset's calibration images, which this layer
cannot load: the caller passes ``calib_loader_for(preset, seed)``; ``checkpoint_for(preset,
seed, activation)`` likewise supplies the default checkpoint path. Exit status 0 when
written, 2 with one line on stderr when the method cannot be exported or an input is missing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

from annsnn import convert
from annsnn.models import build
from annsnn.recipes import get_recipe

from ._deps import MissingExtraError
from .nir_export import ExportError, export_snn


def load_ann(checkpoint: str | Path) -> tuple[torch.nn.Module, dict]:
    """(ANN in eval mode, its build arguments) from a runner checkpoint."""
    ckpt = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    hp = dict(ckpt["hyper_parameters"])
    model = build(hp["arch"], hp["activation"], hp["num_classes"], hp["in_channels"],
                  hp["image_size"], mean=list(hp["mean"]), std=list(hp["std"]),
                  **(hp.get("arch_kwargs") or {}))
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), hp


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export", description="Write a converted SNN as a NIR graph.")
    p.add_argument("--preset", required=True, help="preset name (recorded in the file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", required=True, help="conversion method (annsnn.recipes)")
    p.add_argument("--leak", type=float, default=1.0)
    p.add_argument("--leak-mode", default="exp", choices=["exp", "linear"])
    p.add_argument("--checkpoint", help="the ANN's checkpoint (default: the runner's last.ckpt)")
    p.add_argument("--out", required=True, help="the .nir file to write")
    return p


def export_main(argv: list[str] | None = None, *,
                calib_loader_for: Callable[[str, int], object] | None = None,
                checkpoint_for: Callable[[str, int, str], Path] | None = None) -> int:
    args = parser().parse_args(argv)

    def fail(msg: str) -> int:
        print(f"export: {msg}", file=sys.stderr)
        return 2
    try:
        recipe = get_recipe(args.method)
    except ValueError as exc:
        return fail(str(exc))
    ckpt = args.checkpoint or (checkpoint_for(args.preset, args.seed, recipe.activation)
                               if checkpoint_for else None)
    if ckpt is None:
        return fail("give --checkpoint (the ANN's last.ckpt)")
    if not Path(ckpt).is_file():
        return fail(f"no checkpoint at {ckpt}")
    ann, hp = load_ann(ckpt)
    calib = None
    if recipe.needs_calibration:
        if calib_loader_for is None:
            return fail(f"method '{recipe.name}' calibrates its thresholds on the preset's "
                        "calibration images; run it through the bench CLI, which passes them")
        calib = calib_loader_for(args.preset, args.seed)
    try:
        snn = convert(ann, recipe, calib, leak=args.leak, leak_mode=args.leak_mode)
        meta = {"preset": args.preset, "seed": args.seed, "method": recipe.name,
                "method_description": recipe.description, "leak": args.leak,
                "leak_mode": args.leak_mode, "checkpoint": str(ckpt), "arch": hp["arch"]}
        size = int(hp["image_size"])
        graph = export_snn(snn, args.out, meta, (int(hp["in_channels"]), size, size))
    except (ExportError, MissingExtraError) as exc:
        return fail(f"{recipe.name}: {exc}")
    print(f"wrote {args.out}: {recipe.name}, {len(graph.nodes)} NIR nodes, commit "
          f"{graph.metadata.get('commit')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(export_main())
