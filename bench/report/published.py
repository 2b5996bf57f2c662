"""Published figures of the compared methods at paper scale, with where each was found.

These are other people's numbers (GPU training, full CIFAR / ImageNet, hundreds of epochs),
kept as data so results/README.md renders them in a table of their own, apart from ours.
Every entry names the source it was read from; a figure that was looked for and not found
is listed as not found, never filled in from memory.
"""
from __future__ import annotations

from dataclasses import dataclass

QCFS = "QCFS (Bu et al., ICLR 2022, \"Optimal ANN-SNN Conversion for High-accuracy and Ultra-low-latency SNNs\")"
CALIB = "SNN Calibration (Li et al., ICML 2021, \"A Free Lunch From ANN\")"
COS = "COS (Hao et al., ICLR 2023, \"Bridging the Gap between ANNs and SNNs by Calibrating Offset Spikes\")"
STEPRELU = ("StepReLU (Wang, Cao, Chen, Feng, Wang, IJCAI 2023, \"A New ANN-SNN Conversion Method "
            "with High Accuracy, Low Latency and Good Robustness\")")

QCFS_CODE = ("https://github.com/putshua/ANN_SNN_QCFS/blob/eca136bd085087567013240ee14fb6159a2b6da7/README.md")
CALIB_CODE = ("https://github.com/yhhhli/SNN_Calibration/blob/0305353ffd0a4893cb2cfa4411b9fa4ba9908b71/README.md")
COS_ABSTRACT = "https://openreview.net/forum?id=PFbzoWZyZRX (abstract; also arXiv:2302.10685)"


@dataclass(frozen=True)
class Figure:
    method: str
    arch: str
    dataset: str
    T: str
    acc: str          # as the source prints it (a spread when it gives one)
    source: str       # URL
    where: str        # which part of the source
    note: str = ""


FIGURES = (
    Figure(QCFS, "VGG-16", "CIFAR-10", "2", "90.94", QCFS_CODE, "authors' code README",
           "the code's default setting, as the README reports it"),
    Figure(QCFS, "VGG-16", "CIFAR-10", "4", "94.01", QCFS_CODE, "authors' code README",
           "the code's default setting"),
    Figure(QCFS, "VGG-16", "CIFAR-10", "8", "95.01", QCFS_CODE, "authors' code README",
           "the code's default setting"),
    Figure(QCFS, "VGG-16", "CIFAR-100", "4", "70.42", QCFS_CODE, "authors' code README",
           "default setting with lr 0.05"),
    Figure(QCFS, "VGG-16", "CIFAR-100", "64", "77.70", QCFS_CODE, "authors' code README",
           "default setting with lr 0.05"),
    Figure(CALIB, "VGG-16", "CIFAR-10", "16", "93.65 ± 0.25", CALIB_CODE, "authors' code README",
           "advanced calibration, mean ± std over 5 calibration runs; the ANN: 95.76"),
    Figure(CALIB, "VGG-16", "CIFAR-10", "16", "64.52 ± 4.12", CALIB_CODE, "authors' code README",
           "no calibration (plain conversion) of the same ANN"),
    Figure(CALIB, "ResNet-20", "CIFAR-10", "16", "94.33 ± 0.12", CALIB_CODE, "authors' code README",
           "advanced calibration; the ANN: 95.68"),
    Figure(CALIB, "VGG-16", "CIFAR-100", "16", "70.91 ± 0.65", CALIB_CODE, "authors' code README",
           "advanced calibration; the ANN: 77.98"),
    Figure(COS, "not stated in the abstract", "ImageNet", "6", "67.12", COS_ABSTRACT, "abstract",
           "top-1"),
)

# Looked for and not found in any source searched (the papers' tables were not reachable
# as text; the authors' repositories do not print them).
NOT_FOUND = (
    (QCFS, "the paper's own tables (CIFAR-10/100, ImageNet at T = 1..64)",
     "paper abstract (states ultra-low latency at 4 steps, no table figures); "
     "https://github.com/putshua/SNN_conversion_QCFS README"),
    (COS, "CIFAR-10 / CIFAR-100 figures", "https://github.com/hzc1208/ANN2SNN_COS README (empty); abstract"),
    (STEPRELU, "any accuracy figure (CIFAR-10/100, ImageNet; T = 1)",
     "https://github.com/QuelThalasGrace/aNewANN-SNNConversionMethod README (no figures); "
     "review pages of the paper (no figures)"),
)


def table() -> str:
    """Markdown: the figures found, then what was looked for and not found."""
    lines = ["| method | architecture | dataset | T | accuracy (%) | note | source |",
             "|---|---|---|---|---|---|---|"]
    for f in FIGURES:
        lines.append(f"| {f.method} | {f.arch} | {f.dataset} | {f.T} | {f.acc} | {f.note} | "
                     f"{f.where}: {f.source} |")
    for method, what, searched in NOT_FOUND:
        lines.append(f"| {method} | - | - | - | not found | {what} | searched: {searched} |")
    return "\n".join(lines)


PAPER_PRESETS = ("paper-cifar10-vgg16", "paper-cifar10-resnet20", "paper-cifar100-vgg16", "paper-imagenet-resnet34")


def paper_presets_table(ran: dict[str, str] | None = None) -> str:
    """What this suite's paper presets would produce on a GPU, read from the preset files: the
    exact command, the setting, and whether a run is committed (``ran``: preset -> where)."""
    from .. import presets
    ran = ran or {}
    lines = ["| preset | dataset / network | methods | seeds, T_max, epochs | command (one seed per job, on a GPU) | "
             "committed here |", "|---|---|---|---|---|---|"]
    for name in PAPER_PRESETS:
        try:
            cfg = presets.load(name, light=True)
        except presets.PresetError as exc:
            lines.append(f"| {name} | does not load: {exc} | | | | |")
            continue
        lines.append(f"| {name} | {cfg['dataset']} / {cfg['arch']} | {', '.join(cfg['methods'])} | "
                     f"{cfg['seeds']}, {cfg['T_max']}, {cfg['train']['epochs']} | "
                     f"`./reproduce.sh {name} --seeds 0 --data-dir DIR` | {ran.get(name, 'not run: no GPU was lent to this project')} |")
    return "\n".join(lines)
