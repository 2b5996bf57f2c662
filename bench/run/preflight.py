"""Checks that run before any work, so a bad input costs seconds, not a trained network.

Each failure is one line naming the knob or flag and what would be valid: an output folder
that cannot be written, a tracking URI with an unknown scheme or a server that does not
answer within a few seconds, a tracking store that cannot be written, an accelerator the
machine lacks, a checkpoint ``--resume`` cannot read. (Preset values are range-checked when
the preset loads; the data are checked when the datamodule finds them, before training.)
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
CONNECT_TIMEOUT_S = 3.0


class PreflightError(ValueError):
    """An input that would fail the run later (one-line message)."""


def writable_dir(path: Path, what: str) -> None:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise PreflightError(f"{what} {path} is not writable ({exc.strerror or exc})") from None


def tracking_uri(uri: str) -> None:
    """A known scheme; a server that answers; a SQLite store whose file and folder can be written."""
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if scheme not in SCHEMES:
        raise PreflightError(f"tracking URI {uri!r} (--tracking-uri / MLFLOW_TRACKING_URI): unknown scheme "
                             f"{scheme + ':' if scheme else '(none)'}; valid: {', '.join(s + ':' for s in SCHEMES)}")
    if scheme in ("http", "https"):
        u = urlparse(uri)
        port = u.port or (443 if scheme == "https" else 80)
        try:
            with socket.create_connection((u.hostname, port), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as exc:
            raise PreflightError(f"tracking server {uri} does not answer within {CONNECT_TIMEOUT_S:g} s "
                                 f"({exc.strerror or type(exc).__name__}); start it or pass another "
                                 "--tracking-uri") from None
    elif scheme == "sqlite":
        db = Path(uri.split(":///", 1)[1]) if ":///" in uri else None
        if db is None or str(db) in ("", ":memory:"):
            return
        writable_dir(db.parent, "tracking store folder")
        if db.exists() and not os.access(db, os.W_OK):
            raise PreflightError(f"tracking store {db} is read-only; make it writable or pass another --tracking-uri")


def accelerator(name: str) -> None:
    if name in ("gpu", "cuda"):
        import torch
        if not torch.cuda.is_available():
            raise PreflightError(f"trainer.accelerator={name}, but this machine has no CUDA GPU "
                                 "(torch.cuda.is_available() is False); use trainer.accelerator=cpu")
    elif name == "mps":
        import torch
        if not torch.backends.mps.is_available():
            raise PreflightError("trainer.accelerator=mps, but MPS is not available here; use trainer.accelerator=cpu")


def checkpoint(path: Path) -> None:
    """A checkpoint --resume will load: it must be readable, or the run stops later with a traceback."""
    import torch
    try:
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as exc:   # truncated, corrupt or foreign: which file, and what to do
        raise PreflightError(f"--resume: checkpoint {path} cannot be read ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); delete it to retrain "
                             "that ANN, or rerun without --resume") from None


def run(cfg: dict, out: Path, uri: str, checkpoints: list[Path]) -> None:
    """Everything above, in the order a user would fix them."""
    writable_dir(out, "output folder (--out)")
    tracking_uri(uri)
    accelerator(cfg["trainer"]["accelerator"])
    for ckpt in checkpoints:
        if Path(ckpt).exists():
            checkpoint(ckpt)
