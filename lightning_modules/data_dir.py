"""The data folder a user names (--data-dir, ``data_dir``, $ANNSNN_DATA) and the error for missing data.

Why its own small module: the folder is checked at three moments that must say the
same thing -- the command line before a run starts, the DataModule's constructor
(before anything is downloaded or trained), and the search in ``data_sources`` --
and each of them may import this without importing the others, torch or Lightning.
A folder that is not there is an error, never a silent fall back to the default
search (which would train on data from somewhere else).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV_VAR", "DataUnavailableError", "check_data_dir", "given_data_dir"]

DATA_ENV_VAR = "ANNSNN_DATA"


class DataUnavailableError(RuntimeError):
    """No source could supply the requested dataset (or the given data folder is not there)."""

    def one_line(self) -> str:
        """What is missing and where it was looked for, with where the ways to supply it are:
        what a command line prints (the full message is the library's)."""
        lines = str(self).splitlines()
        if len(lines) == 1:
            return lines[0]
        return (f"{lines[0]} Supply it with --data-dir DIR or {DATA_ENV_VAR}=DIR (layouts: README, "
                "Data), one run with network access, or the offline copies.")


def check_data_dir(data_dir: str | os.PathLike | None, what: str = "data_dir {}") -> Path | None:
    """``data_dir`` as a Path (``~`` expanded), or an error when it names no folder.

    ``what`` names the folder in the error, with ``{}`` where the folder goes:
    "data_dir /x does not exist", "$ANNSNN_DATA /x is not a folder"."""
    if data_dir is None:
        return None
    d = Path(data_dir).expanduser()
    if not d.is_dir():
        raise DataUnavailableError(f"{what.format(d)} {'is not a folder' if d.exists() else 'does not exist'}")
    return d


def given_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The folder the user gave: ``data_dir``, else $ANNSNN_DATA when set; checked."""
    if data_dir is None and os.environ.get(DATA_ENV_VAR):
        return check_data_dir(os.environ[DATA_ENV_VAR], f"${DATA_ENV_VAR} {{}}")
    return check_data_dir(data_dir)
