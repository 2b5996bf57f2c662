"""The StepReLU ANN-to-SNN conversion method and its baselines, in plain PyTorch.

No Lightning, MLflow or Optuna imports here: everything above builds on this.
"""
from .activations import ACTIVATIONS, QCFS, StepReLU, make_activation
from .convert import ConversionError, calibrate_thresholds, convert, fold_bn
from .neurons import IFNeuron, reset_neurons, spiking_layers
from .recipes import RECIPES, Recipe, get_recipe
from .simulate import SimResult, simulate

__all__ = ["StepReLU", "QCFS", "ACTIVATIONS", "IFNeuron", "convert", "simulate", "ConversionError",
           "fold_bn", "calibrate_thresholds", "RECIPES", "Recipe", "get_recipe", "SimResult",
           "make_activation", "reset_neurons", "spiking_layers"]
