"""Who the verdicts are about (docs/method.md#verdicts): the paper's method, its baselines, and
the suite's own ablations, which are shown beside them but never judged.

The claims are the StepReLU paper's, so they are about named methods: the paper's method
(``SUBJECT``) against the conversions it compares with (``PAPER_BASELINES``). Every other
method a preset runs (steprelu-single, the capped steprelu variants, robustnorm-all,
maxnorm-channel) is this suite's ablation or option: shown, not a competitor in a verdict.
"""
from __future__ import annotations

from annsnn.recipes import RECIPES

SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable here"

SUBJECT = "steprelu"
PAPER_BASELINES = ("maxnorm", "robustnorm", "opi", "qcfs")


def baselines(methods) -> list[str]:
    """The paper's baselines among ``methods``, in their order."""
    return [m for m in methods if m in PAPER_BASELINES]


def ablations(methods) -> list[str]:
    """The methods shown but not judged: neither the subject nor a paper baseline."""
    return [m for m in methods if m != SUBJECT and m not in PAPER_BASELINES]


def cap(method: str) -> int:
    """The spike cap per step of a capped multi-spike recipe (steprelu-capC), else 0."""
    return int(getattr(RECIPES.get(method), "cap", 0) or 0)


def multi_spike_variants(methods) -> list[str]:
    """The subject and its capped variants with C >= 2 (cap 1 is steprelu-single's network)."""
    return [m for m in methods if m == SUBJECT or cap(m) >= 2]


def decide(failed: int, untestable: int) -> str:
    """A rule that needs every comparison of its family to hold: not supported as soon as a
    testable one fails, else not testable while one could not be made, else supported."""
    if failed:
        return NOT_SUPPORTED
    return NOT_TESTABLE if untestable else SUPPORTED
