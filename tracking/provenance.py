"""Where a result came from: the commit (dirty or not) and the package versions.

Recorded beside every run and every results/ folder so a number can be traced to
the code and the environment that produced it.
"""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "lightning", "mlflow", "optuna", "optuna-integration", "numpy",
            "adversarial-robustness-toolbox")


def git_commit(ignore: list | tuple = ()) -> str:
    """HEAD, with ``-dirty`` when tracked files differ from it. ``ignore``: paths whose
    changes do not count, i.e. the outputs being written by the run asking."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        excludes = [f":(exclude){Path(p).resolve().relative_to(PROJECT_ROOT.resolve())}"
                    for p in ignore if Path(p).resolve().is_relative_to(PROJECT_ROOT.resolve())]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *excludes],
                               cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def portable(text: str, siblings: bool = False) -> str:
    """``text`` with this checkout's absolute path taken out, so committed results name no
    machine: ``sqlite:////abs/repo/optuna.db`` -> ``sqlite:///optuna.db`` (relative to the
    repository root), ``/abs/repo/runs/x`` -> ``runs/x``; with ``siblings``, also a path beside
    the checkout (the offline data in ``/abs/shared/data``) -> ``../shared/data``."""
    roots = [(PROJECT_ROOT.resolve(), ""), (PROJECT_ROOT, "")]
    if siblings:
        roots += [(PROJECT_ROOT.resolve().parent, "../"), (PROJECT_ROOT.parent, "../")]
    out = str(text)
    for root, rel in roots:
        if str(root) != "/":
            out = out.replace(str(root) + "/", rel)
    return out


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Python and the installed versions of the packages that decide the numbers, and of
    ``extra`` ones (a package that is not installed is left out)."""
    out = {"python": sys.version.split()[0]}
    for p in (*PACKAGES, *extra):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out
