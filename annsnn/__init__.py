"""The StepReLU ANN-to-SNN conversion method and its baselines, in plain PyTorch.

No Lightning, MLflow or Optuna imports here: everything above builds on this. The names
below load on first use, so a module that needs only the torch-free facts
(``annsnn.datasets``) does not pay for importing torch.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

_WHERE = {
    "ACTIVATIONS": "activations", "QCFS": "activations", "StepReLU": "activations", "make_activation": "activations",
    "ConversionError": "convert", "calibrate_thresholds": "convert", "convert": "convert", "fold_bn": "convert",
    "IFNeuron": "neurons", "reset_neurons": "neurons", "spiking_layers": "neurons",
    "RECIPES": "recipes", "Recipe": "recipes", "get_recipe": "recipes",
    "SimResult": "simulate", "simulate": "simulate",
}
__all__ = list(_WHERE)


class _Package(ModuleType):
    """Keeps ``annsnn.convert`` and ``annsnn.simulate`` the functions, as the eager imports did:
    when the import system binds a submodule of the same name to the package, the function
    of that name is bound instead."""

    def __setattr__(self, name, value):
        if isinstance(value, ModuleType) and _WHERE.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
