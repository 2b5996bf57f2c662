"""Presets: YAML files in bench/presets/, merged over typed defaults, with ``--set key=value``.

OmegaConf does the merging, the value parsing of ``--set`` and the type checks; the
config is in struct mode, so a key that is not in the defaults (a typo) is rejected,
at any depth, with the valid keys of its level instead of silently running a default.
Two blocks are free-form because their keys belong to a constructor: an activation's
knobs (checked against the activation class's signature) and ``arch_kwargs`` (checked
by building the model on the meta device). ``load`` returns a plain dict.

Every range is checked here, before a run does any work, with one line naming the knob and
its valid range. The checks that need the method's registries (methods, architectures,
activation knobs) import torch; ``load(..., light=True)`` skips them, so ``list`` and most
argument errors answer without loading torch.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from annsnn.datasets import DATASETS

PRESET_DIR = Path(__file__).resolve().parent / "presets"
Number = Union[int, float]  # keeps a preset's 8 an 8 (the manifest records the preset as written)

# Knobs that differ from the activation class's own defaults; the rest of its signature
# may be set too. Only what is listed here is recorded, so manifests stay as they were.
ACTIVATION_DEFAULTS: dict[str, dict] = {
    "relu": {},
    "qcfs": {"L": 8, "init_lam": 8.0},   # Bu et al.'s code: lam_q starts at 8
    "steprelu": {"theta": 0.05, "L": 20, "phi": 0.0, "clip": True, "learn_theta": False},
}


@dataclass
class Train:
    epochs: int = 3
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: Number = 0.0
    label_smoothing: float = 0.0
    channels_last: bool = False     # train in NHWC layout (faster on CPU for wide convs)


@dataclass
class Trainer:
    accelerator: str = "cpu"
    devices: Any = 1                # an int, "auto" or a list of device ids, as Lightning takes it
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"         # bf16-mixed where the hardware computes bf16, else fp32 (run/precision.py)
    threads: int = 0                # torch.set_num_threads; 0 = leave torch's default
    limit_train_batches: Number = 1.0   # Lightning's: a fraction of the epoch, or a batch count
    limit_val_batches: Number = 1.0     # (the dry run sets both to 2 batches)


@dataclass
class Robustness:
    """The robustness stage (bench/robustness/, docs/method.md#robustness). Every part uses the head
    of one fixed pool of ``test_subset`` test images, so parts and methods share images;
    the ``*_images`` counts size each part (the CI half-width is printed beside each table)."""
    enabled: bool = False
    test_subset: int = 2000          # the image pool (first N of the test split's fixed order)
    methods: List[str] = field(default_factory=list)   # [] = every method of the preset
    T_fixed: List[int] = field(default_factory=lambda: [1, 4])  # besides each method's op. point
    op_gap: float = 1.0              # operating point: first t within op_gap points of the ANN
    T_max: int = 64                  # clean simulation up to this T when the records miss the op
    eps: List[float] = field(default_factory=lambda: [1, 2, 4, 8])   # L-inf, units of 1/255
    sources: List[str] = field(default_factory=lambda: ["relu", "qcfs", "steprelu"])
    common_source: str = "relu"      # the headline transfer row
    ann_attacks: List[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    pgd_steps: int = 10
    pgd_restarts: int = 2
    snn_pgd_steps: int = 10          # white-box PGD through time (BPTT, surrogate gradient)
    snn_pgd_restarts: int = 2
    snn_points: List[str] = field(default_factory=lambda: ["T_1", "T_4", "T_op"])
    snn_pgd_T_max: int = 64          # points with a larger T are not attacked white-box (stated)
    noise_images: int = 2000
    transfer_images: int = 1000
    snn_attack_images: int = 200
    leak_images: int = 2000
    sanity_images: int = 100         # gradient-masking checks; 0 skips them
    gaussian_sigma: List[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    salt_pepper_s: List[float] = field(default_factory=lambda: [0.99, 0.95, 0.9, 0.8])
    dynamic: List[bool] = field(default_factory=lambda: [False, True])
    authors_s: float = 0.95          # the authors' AddNoise(s, p), static, always reported
    authors_p: float = 0.5
    # the leak where it can act (never at t = 1): clean and under the authors' noise, each
    # leak and mode paired against leak 1, at every T of leak_T, for leak_methods ([] = all)
    leaks: List[float] = field(default_factory=lambda: [1.0, 0.99, 0.98, 0.95, 0.9, 0.8])
    leak_modes: List[str] = field(default_factory=lambda: ["exp", "linear"])
    leak_T: List[int] = field(default_factory=lambda: [2, 4, 8, 16, 32])
    leak_methods: List[str] = field(default_factory=lambda: ["steprelu"])


@dataclass
class Selection:
    """Per-activation candidate settings chosen on validation (``python -m bench select``):
    ``candidates: {qcfs: [{label: ..., L: 4}, ...]}``, the paper's setting first."""
    seed: int = 100                 # a seed of its own: its networks are never evaluated on test
    rule: str = "ann_val"           # ann_val | snn_val_op (bench/run/select.py)
    candidates: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Preset:
    name: Optional[str] = None
    description: str = ""
    why: str = ""                   # why this architecture / schedule (recorded in the preset)
    caveats: List[str] = field(default_factory=list)   # what limits this preset's evidence, in words
    #                                 (results/README.md's Caveats; words only: no number changes)
    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None
    arch: str = "cnn-small"
    arch_kwargs: Dict[str, Any] = field(default_factory=dict)
    methods: List[str] = field(default_factory=list)   # no default: a preset chooses what it runs
    seeds: List[int] = field(default_factory=lambda: [0])
    T_max: int = 32
    leaks: List[float] = field(default_factory=lambda: [1.0])
    val_fraction: float = 0.1
    batch_size: int = 128
    eval_batch_size: int = 500
    num_workers: int = 0
    calib_size: int = 1000
    test_subset: Optional[int] = None   # evaluate on a fixed subset of the test split (None = all)
    val_subset: Optional[int] = None    # simulate on the head of the validation split (None = all):
    #                                     where every operating point is chosen
    deterministic: bool = False         # --deterministic: capped ISA, fixed threads, hashes comparable
    layer_error_t: List[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])   # conversion error
    #                                     per spiking layer at these t (depth as an axis); [] = off
    activations: Dict[str, Dict[str, Any]] = field(
        default_factory=lambda: {a: dict(k) for a, k in ACTIVATION_DEFAULTS.items()})
    train: Train = field(default_factory=Train)
    trainer: Trainer = field(default_factory=Trainer)
    eval_every_k_epochs: int = 0
    summary_t: List[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    budget_minutes: Optional[Number] = None   # printed against the wall time at the end
    robustness: Robustness = field(default_factory=Robustness)
    selection: Selection = field(default_factory=Selection)


class PresetError(ValueError):
    pass


def available() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def defaults() -> DictConfig:
    """The typed defaults in struct mode; the two constructor-knob blocks stay open."""
    cfg = OmegaConf.structured(Preset)
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_struct(cfg.arch_kwargs, False)
    OmegaConf.set_struct(cfg.selection.candidates, False)
    for knobs in cfg.activations.values():
        OmegaConf.set_struct(knobs, False)
    return cfg


def _valid_keys(cfg: DictConfig, full_key: str) -> tuple[str, list[str]]:
    """(parent path, keys valid there) for the unknown ``full_key``."""
    parent = full_key.rpartition(".")[0]
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return parent, list(node.keys()) if isinstance(node, DictConfig) else []


def _wrap_scalars(cfg, over):
    """``over`` with a scalar given where ``cfg`` holds a list made a one-item list
    (``leaks=0.9`` -> ``[0.9]``, ``methods=steprelu`` -> ``["steprelu"]``); the list's
    item type then checks it. ``None`` stays None (the type check rejects it)."""
    if isinstance(over, DictConfig):
        over = OmegaConf.to_container(over, resolve=False)
    if not isinstance(over, dict) or not isinstance(cfg, DictConfig):
        return over
    out = {}
    for key, value in over.items():
        node = cfg._get_node(key) if isinstance(key, str) and key in cfg else None
        if OmegaConf.is_list(node) and value is not None and not isinstance(value, (list, tuple)):
            value = [value]
        elif OmegaConf.is_dict(node):
            value = _wrap_scalars(node, value)
        out[key] = value
    return out


def _merge(cfg: DictConfig, over, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, _wrap_scalars(cfg, over))
    except ConfigKeyError as exc:
        key = exc.full_key or str(exc.key)
        parent, valid = _valid_keys(cfg, key)
        raise PresetError(f"unknown preset key '{key}' in {source}; valid keys"
                          f"{' under ' + parent if parent else ''}: {', '.join(valid)}") from None
    except OmegaConfBaseException as exc:
        msg = str(exc).splitlines()[0]
        where = f" for '{exc.full_key}'" if getattr(exc, "full_key", None) else ""
        raise PresetError(f"bad value{where} in {source}: {msg}") from None


def _dotlist(assignments: list[str]) -> DictConfig:
    for a in assignments:
        if "=" not in a:
            raise PresetError(f"--set expects key=value, got {a!r}")
    try:
        return OmegaConf.from_dotlist(list(assignments))
    except OmegaConfBaseException as exc:
        raise PresetError(f"cannot parse --set {' '.join(assignments)}: {str(exc).splitlines()[0]}") from None


def _registries():
    """The method's registries (they import torch): activations, architectures, recipes."""
    from annsnn import models
    from annsnn.activations import ACTIVATIONS
    from annsnn.recipes import RECIPES
    return ACTIVATIONS, models, RECIPES


def activation_params(name: str) -> list[str]:
    """The keyword parameters of a registered activation's constructor: its valid knobs."""
    sig = inspect.signature(_registries()[0][name])
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _one_of(value, valid, what: str) -> None:
    if value not in valid:
        raise PresetError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def _check_arch_kwargs(cfg: dict) -> None:
    """Build the network on the meta device (no memory, no init cost) to catch bad knobs."""
    import torch
    models = _registries()[1]
    info = DATASETS[cfg["dataset"]]
    try:
        with torch.device("meta"):
            models.build(cfg["arch"], num_classes=info.num_classes, in_channels=info.in_channels,
                         image_size=info.image_size, **cfg["arch_kwargs"])
    except (TypeError, ValueError) as exc:
        raise PresetError(f"arch_kwargs {cfg['arch_kwargs']} do not fit {cfg['arch']}: {exc}") from None


NON_EMPTY = ("methods", "seeds", "leaks", "summary_t")   # lists a run needs at least one item of
NO_REPEATS = ("methods", "seeds")                        # a repeat would run (and record) twice
SEED_RANGE = (0, 2**32 - 1)                              # what Lightning's seed_everything takes


def _lists_ok(cfg: dict) -> None:
    for key in NON_EMPTY:
        if not cfg[key]:
            raise PresetError(f"'{key}' needs at least one item, got []")
    for key in NO_REPEATS:
        repeated = sorted({v for v in cfg[key] if cfg[key].count(v) > 1}, key=str)
        if repeated:
            raise PresetError(f"'{key}' lists {', '.join(map(str, repeated))} more than once")
    for s in cfg["seeds"]:
        if not SEED_RANGE[0] <= s <= SEED_RANGE[1]:
            raise PresetError(f"seeds must lie in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {s!r}")


def _knob_types_ok(act: str, knobs: dict) -> None:
    """A free-form knob still keeps the kind of its constructor default: a boolean is no
    number (YAML's ``true`` for ``L`` would run with L = 1), a number no boolean."""
    params = inspect.signature(_registries()[0][act]).parameters
    for key, value in knobs.items():
        default = params[key].default
        if default is inspect.Parameter.empty or default is None or value is None:
            continue
        if isinstance(default, bool) != isinstance(value, bool) or \
                (isinstance(default, (int, float)) and not isinstance(value, (int, float))):
            want = "a boolean" if isinstance(default, bool) else f"a number like its default {default!r}"
            raise PresetError(f"bad value for 'activations.{act}.{key}': {value!r} is not {want}")


def _selection_ok(cfg: dict) -> None:
    sel = cfg["selection"]
    _one_of(sel["rule"], ["ann_val", "snn_val_op"], "selection.rule")
    for act, cands in sel["candidates"].items():
        _one_of(act, list(_registries()[0]), "selection activation")
        if not isinstance(cands, list) or not cands:
            raise PresetError(f"selection.candidates.{act} needs a list of settings, got {cands!r}")
        valid = activation_params(act)
        for c in cands:
            unknown = sorted(set(c) - set(valid) - {"label"})
            if unknown:
                raise PresetError(f"unknown knob 'selection.candidates.{act}.{unknown[0]}'; valid: {', '.join(valid)}")
            _knob_types_ok(act, {k: v for k, v in c.items() if k != "label"})


# (key, lowest, highest, lowest included, highest included): one line names the knob and its range
RANGES = [
    ("T_max", 1, None, True, True), ("batch_size", 1, None, True, True), ("eval_batch_size", 1, None, True, True),
    ("calib_size", 1, None, True, True), ("test_subset", 1, None, True, True), ("val_subset", 1, None, True, True),
    ("num_workers", 0, None, True, True), ("eval_every_k_epochs", 0, None, True, True),
    ("budget_minutes", 0, None, False, True),
    ("train.epochs", 1, None, True, True), ("train.lr", 0, None, False, True),
    ("train.momentum", 0, 1, True, False), ("train.weight_decay", 0, None, True, True),
    ("train.warmup_epochs", 0, None, True, True), ("train.label_smoothing", 0, 1, True, False),
    ("trainer.threads", 0, None, True, True), ("trainer.num_nodes", 1, None, True, True),
    ("selection.seed", 0, 2**32 - 1, True, True),
    ("robustness.test_subset", 1, None, True, True), ("robustness.T_max", 1, None, True, True),
    ("robustness.op_gap", 0, None, True, True), ("robustness.pgd_steps", 1, None, True, True),
    ("robustness.pgd_restarts", 1, None, True, True), ("robustness.snn_pgd_steps", 1, None, True, True),
    ("robustness.snn_pgd_restarts", 1, None, True, True), ("robustness.snn_pgd_T_max", 1, None, True, True),
    ("robustness.noise_images", 1, None, True, True), ("robustness.transfer_images", 1, None, True, True),
    ("robustness.snn_attack_images", 1, None, True, True), ("robustness.leak_images", 1, None, True, True),
    ("robustness.sanity_images", 0, None, True, True), ("robustness.authors_s", 0, 1, True, True),
    ("robustness.authors_p", 0, 1, True, True),
]
LIST_RANGES = [("summary_t", 1, None), ("layer_error_t", 1, None), ("robustness.T_fixed", 1, None), ("robustness.eps", 0, 255),
               ("robustness.gaussian_sigma", 0, None), ("robustness.salt_pepper_s", 0, 1),
               ("robustness.leak_T", 1, None)]


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _range_text(lo, hi, lo_in, hi_in) -> str:
    if hi is None:
        return f"{'>=' if lo_in else '>'} {lo}"
    return f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def _ranges_ok(cfg: dict) -> None:
    """Every numeric knob in its range (None allowed where the default is None)."""
    for key, lo, hi, lo_in, hi_in in RANGES:
        v = _get(cfg, key)
        if v is None:
            continue
        ok = (v >= lo if lo_in else v > lo) and (hi is None or (v <= hi if hi_in else v < hi))
        if not ok:
            raise PresetError(f"'{key}' must be {_range_text(lo, hi, lo_in, hi_in)}, got {v!r}")
    for key, lo, hi in LIST_RANGES:
        for v in _get(cfg, key):
            if v < lo or (hi is not None and v > hi):
                raise PresetError(f"every value of '{key}' must be {_range_text(lo, hi, True, True)}, got {v!r}")
    for lk in list(cfg["leaks"]) + list(cfg["robustness"]["leaks"]):
        if not 0 < float(lk) <= 1:
            raise PresetError(f"leak must lie in (0, 1], got {lk!r}")
    if not 0 < float(cfg["val_fraction"]) < 1:
        raise PresetError(f"val_fraction must lie in (0, 1), got {cfg['val_fraction']!r}")
    defaults_t = Preset().summary_t
    late = [t for t in cfg["summary_t"] if t > cfg["T_max"]]
    if late and cfg["summary_t"] != defaults_t:
        raise PresetError(f"summary_t {cfg['summary_t']} asks for t = {', '.join(map(str, late))} beyond "
                          f"T_max = {cfg['T_max']}; every summary_t must be <= T_max")
    cfg["summary_t"] = [t for t in cfg["summary_t"] if t <= cfg["T_max"]]   # the defaults, cut to T_max
    if not cfg["summary_t"]:
        raise PresetError(f"summary_t has no t <= T_max = {cfg['T_max']}")


def validate_light(cfg: dict) -> dict:
    """What needs no torch: dataset name, lists, every range."""
    _one_of(cfg["dataset"], list(DATASETS), "dataset")
    if not cfg["methods"]:
        raise PresetError("the preset lists no methods (key 'methods')")
    _lists_ok(cfg)
    _ranges_ok(cfg)
    return cfg


def validate(cfg: dict) -> dict:
    if not cfg["methods"]:   # with torch loaded anyway, the error can list what there is
        raise PresetError(f"the preset lists no methods (key 'methods'); available methods: "
                          f"{', '.join(_registries()[2])}")
    validate_light(cfg)
    ACTIVATIONS, models, RECIPES = _registries()
    _one_of(cfg["arch"], models.ARCHITECTURES, "architecture")
    for m in cfg["methods"]:
        _one_of(m, list(RECIPES), "method")
    for act, knobs in cfg["activations"].items():
        valid = activation_params(act)
        unknown = sorted(set(knobs) - set(valid))
        if unknown:
            raise PresetError(f"unknown preset key 'activations.{act}.{unknown[0]}'; valid keys under "
                              f"activations.{act} ({ACTIVATIONS[act].__name__}): {', '.join(valid) or '(none)'}")
        _knob_types_ok(act, knobs)
    _check_arch_kwargs(cfg)
    _selection_ok(cfg)
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    """A preset file as a dict; a syntax error or a repeated key is one line naming the place."""
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else path.name
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PresetError(f"cannot read preset {where}: {what}") from None
    if not isinstance(data, dict):
        raise PresetError(f"preset {path.name} is not a mapping of keys to values")
    return data


def load(name_or_path: str, sets: list[str] | None = None, light: bool = False) -> dict:
    """Load a preset by name (bench/presets/NAME.yaml) or path and apply ``key=value`` overrides.
    ``light``: skip the checks that need torch (methods, architecture, activation knobs)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise PresetError(f"unknown preset {name_or_path!r}; available: {', '.join(available())}")
    data = read_yaml(path)
    cfg = _merge(defaults(), data, path.name)
    if cfg.name is None:
        cfg.name = path.stem
    if sets:
        cfg = _merge(cfg, _dotlist(sets), "--set")
    cfg = OmegaConf.to_container(cfg)
    return validate_light(cfg) if light else validate(cfg)


def activation_groups(cfg: dict) -> dict[str, list[str]]:
    """ANN activation -> the methods it serves, in preset order."""
    from annsnn.recipes import get_recipe
    groups: dict[str, list[str]] = {}
    for m in cfg["methods"]:
        groups.setdefault(get_recipe(m).activation, []).append(m)
    return groups
