"""Interoperability of the suite's converted SNNs: NIR export, a round trip through a second
simulator (snnTorch) and NeuroBench's metrics (docs/interop.md).

Imports ``annsnn`` only. The optional packages (nir, nirtorch, snntorch, neurobench) are
imported inside the functions that need them: ``import interop`` works without them, and a
call without them raises ``MissingExtraError`` with one line naming the install command.
"""
from ._deps import INSTALL_HINT, MissingExtraError, check_extras
from .nir_export import ExportError, check_exportable, export_snn, graph_input, to_nir

__all__ = ["ExportError", "MissingExtraError", "INSTALL_HINT", "check_exportable", "check_extras", "export_snn",
           "graph_input", "to_nir", "roundtrip", "neurobench_metrics"]


def roundtrip(*args, **kwargs):
    """``interop.roundtrip.roundtrip``: export, import in snnTorch, compare with the suite."""
    from .roundtrip import roundtrip as run
    return run(*args, **kwargs)


def neurobench_metrics(*args, **kwargs):
    """``interop.neurobench_metrics.neurobench_metrics``: NeuroBench's metrics of a converted SNN."""
    from .neurobench_metrics import neurobench_metrics as run
    return run(*args, **kwargs)
