"""Presets: YAML files in bench/presets/, merged over DEFAULTS, with ``--set key=value`` overrides.

Every key a preset may hold appears in DEFAULTS; anything else is rejected with
the list of valid keys, so a typo never silently runs the default.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from annsnn.convert import METHODS
from annsnn.models import ARCHITECTURES

PRESET_DIR = Path(__file__).resolve().parent / "presets"
DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "cifar10-jpeg", "imagenet")

DEFAULTS: dict = {
    "name": None,
    "description": "",
    "why": "",                      # why this architecture / schedule (recorded in the preset)
    "dataset": "fashion-mnist",
    "data_dir": None,
    "arch": "cnn-small",
    "arch_kwargs": {},
    "methods": list(METHODS),
    "seeds": [0],
    "T_max": 32,
    "leaks": [1.0],
    "val_fraction": 0.1,
    "batch_size": 128,
    "eval_batch_size": 500,
    "num_workers": 0,
    "calib_size": 1000,
    "test_subset": None,            # evaluate on a fixed subset of the test split (None = all)
    "robustnorm_percentile": 99.9,
    "activations": {
        "relu": {},
        "qcfs": {"L": 8, "init_lam": 4.0},
        "steprelu": {"theta": 0.05, "L": 20, "phi": 0.0, "clip": True, "learn_theta": False},
    },
    "train": {
        "epochs": 3,
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 0.0,
        "label_smoothing": 0.0,
        "channels_last": False,     # train in NHWC layout (faster on CPU for wide convs)
    },
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "32-true",
        "threads": 0,               # torch.set_num_threads; 0 = leave torch's default
    },
    "eval_every_k_epochs": 0,
    "summary_t": [1, 2, 4, 8, 16, 32],
    "budget_minutes": None,         # printed against the wall time at the end
    "robustness": {
        "enabled": False,
        "test_subset": 2000,
        "T": [1, 4, 32],
        "leaks": [1.0, 0.95, 0.9, 0.8],
        "gaussian_sigma": [0.05, 0.1, 0.2],
        "salt_pepper_s": [0.95, 0.9, 0.8],
        "dynamic": [False, True],
        "fgsm_eps": [0.01, 0.03, 0.05],
        "pgd_eps": [0.01, 0.03],
        "pgd_steps": 10,
        "pgd_step_size": None,
        "snn_attack_T": [1, 4],
        "snn_attack_subset": 500,
        "leak_noise": {"kind": "salt_pepper", "level": 0.9},
    },
}


class PresetError(ValueError):
    pass


def available() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _merge(base: dict, over: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            valid = ", ".join(sorted(base))
            raise PresetError(f"unknown preset key '{path}{k}'; valid keys{' under ' + path[:-1] if path else ''}: {valid}")
        # free-form dicts (knobs passed straight to a constructor) merge without key checks
        if isinstance(base[k], dict) and isinstance(v, dict) and path + k not in ("arch_kwargs",) \
                and not (path.startswith("activations.")):
            out[k] = _merge(base[k], v, f"{path}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _set(cfg: dict, assignment: str) -> dict:
    if "=" not in assignment:
        raise PresetError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw)
    over: dict = {}
    node = over
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return _merge(cfg, over)


def validate(cfg: dict) -> dict:
    def one_of(value, valid, what):
        if value not in valid:
            raise PresetError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    one_of(cfg["dataset"], DATASETS, "dataset")
    one_of(cfg["arch"], ARCHITECTURES, "architecture")
    if not cfg["methods"]:
        raise PresetError("the preset lists no methods")
    for m in cfg["methods"]:
        one_of(m, list(METHODS), "method")
    if not isinstance(cfg["T_max"], int) or cfg["T_max"] < 1:
        raise PresetError(f"T_max must be an integer >= 1, got {cfg['T_max']!r}")
    for lk in list(cfg["leaks"]) + list(cfg["robustness"]["leaks"]):
        if not 0 < float(lk) <= 1:
            raise PresetError(f"leak must lie in (0, 1], got {lk!r}")
    if not 0 < float(cfg["val_fraction"]) < 1:
        raise PresetError(f"val_fraction must lie in (0, 1), got {cfg['val_fraction']!r}")
    cfg["summary_t"] = [t for t in cfg["summary_t"] if t <= cfg["T_max"]]
    return cfg


def load(name_or_path: str, sets: list[str] | None = None) -> dict:
    """Load a preset by name (bench/presets/NAME.yaml) or path and apply ``key=value`` overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise PresetError(f"unknown preset {name_or_path!r}; available: {', '.join(available())}")
    data = yaml.safe_load(path.read_text()) or {}
    cfg = _merge(DEFAULTS, data)
    cfg["name"] = cfg["name"] or path.stem
    for s in sets or []:
        cfg = _set(cfg, s)
    return validate(cfg)


def activation_groups(cfg: dict) -> dict[str, list[str]]:
    """ANN activation -> the methods it serves, in preset order."""
    groups: dict[str, list[str]] = {}
    for m in cfg["methods"]:
        groups.setdefault(METHODS[m].activation, []).append(m)
    return groups
