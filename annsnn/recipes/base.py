"""What a conversion method is: a recipe (ANN activation + threshold rule + neuron),
and the one registry that names them (docs/method.md#methods-compared).

``convert`` is a fixed template that asks the recipe for everything method-specific;
nothing outside a recipe switches on a method's name.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from ..activations import ACTIVATIONS
from ..neurons import IFNeuron


class Recipe(ABC):
    """A conversion method. Subclasses set ``name``, ``activation`` (a key of
    ``annsnn.activations.ACTIVATIONS``: the ANN activation the method converts),
    ``description`` (one line for tables and MLflow), and the two flags below."""

    name: str
    activation: str
    description: str
    exact_at_t1: bool = False          # claims: SNN at t = 1 equals the folded ANN bit for bit
    needs_calibration: bool = False    # thresholds come from a calibration set

    @abstractmethod
    def thresholds(self, model: nn.Module, calib_loader) -> dict[str, float | torch.Tensor]:
        """Per-activation-layer threshold (module path -> value) of the BatchNorm-folded
        ``model``: a number for the whole layer, or a [C] tensor with one threshold per
        channel (channel axis 1 of the layer's output), which ``IFNeuron`` takes as it is."""

    @abstractmethod
    def neuron(self, activation: nn.Module, threshold: float | torch.Tensor | None, leak: float,
               leak_mode: str = "exp") -> IFNeuron:
        """The spiking layer replacing ``activation``; ``threshold`` is its entry of
        ``thresholds()`` when the recipe needs calibration, else None; ``leak`` and
        ``leak_mode`` ("exp" or "linear", annsnn.neurons) go to the IFNeuron unchanged."""

    def layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The (path, module) pairs of ``model``'s activations of this recipe's kind."""
        kind = ACTIVATIONS[self.activation]
        return [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add ``recipe`` under its name; a name can be registered once."""
    if recipe.name in RECIPES:
        raise ValueError(f"a conversion method named {recipe.name!r} is already registered")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str | Recipe) -> Recipe:
    """The registered recipe called ``name`` (a Recipe is returned as it is)."""
    if isinstance(name, Recipe):
        return name
    if name not in RECIPES:
        raise ValueError(f"unknown conversion method {name!r}; valid: {', '.join(RECIPES)}")
    return RECIPES[name]
