"""Conversion methods as recipes (ANN activation + threshold rule + neuron), one registry.

A new method is one module that defines and ``register``s its recipe, plus one import
line below; the order of the imports is the order of ``RECIPES``.
"""
from .base import RECIPES, Recipe, get_recipe, register
from . import ratenorm  # noqa: F401  maxnorm, robustnorm
from . import opi  # noqa: F401
from . import qcfs  # noqa: F401
from . import steprelu  # noqa: F401  steprelu, steprelu-single
from . import channelnorm  # noqa: F401  maxnorm-channel

__all__ = ["RECIPES", "Recipe", "get_recipe", "register"]
