"""The StepReLU ANN-to-SNN conversion method and its baselines, in plain PyTorch.

No Lightning, MLflow or Optuna imports here: everything above builds on this.
"""
from .activations import QCFS, StepReLU, make_activation
from .convert import METHODS, ConversionError, calibrate_thresholds, convert, fold_bn
from .neurons import IFNeuron, reset_neurons, spiking_layers
from .simulate import SimResult, simulate

__all__ = ["StepReLU", "QCFS", "IFNeuron", "convert", "simulate", "ConversionError", "fold_bn",
           "calibrate_thresholds", "METHODS", "SimResult", "make_activation", "reset_neurons",
           "spiking_layers"]
