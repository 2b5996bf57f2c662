"""The optional packages of the interop extra, imported only when a function needs them."""
from __future__ import annotations

import importlib

INSTALL_HINT = "pip install -e '.[interop]'"


class MissingExtraError(ImportError):
    """An interop function was called without the package it needs."""


def need(module: str, what: str):
    """``module`` imported, or MissingExtraError with one line naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = INSTALL_HINT if module != "neurobench" else \
            f"{INSTALL_HINT} and pip install --no-deps neurobench==2.3.0"
        raise MissingExtraError(f"{what} needs the package '{module.split('.')[0]}', which is not "
                                f"installed: {hint}") from exc


def check_extras(neurobench: bool = True) -> None:
    """MissingExtraError (one line, the install command) unless the interop extra (and, with
    ``neurobench``, NeuroBench) imports: a check before any work."""
    for module in ["nir", "nirtorch", "snntorch", "h5py"] + (["neurobench"] if neurobench else []):
        need(module, "the interop stage")
