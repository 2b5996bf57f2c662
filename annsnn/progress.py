"""Progress bars that stay bars on a terminal and become plain log lines in a file.

A tqdm bar redraws itself with carriage returns; written to a file (SLURM, CI, nohup,
``> log 2>&1``) every redraw stays in the file, and one smoke run wrote about 1 MB.
Off a terminal, ``progress_bar`` returns a ``LineBar`` instead: one whole line at most
every ``interval`` seconds, plus the line that reaches the total.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm as plain_tqdm
from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0
"""Seconds between two progress lines when the output is not a terminal."""


def is_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: stderr, where tqdm writes) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


LINE_FORMAT = "{desc}{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
"""A log line: the numbers of a tqdm bar without the bar."""


class LineBar(plain_tqdm):
    """A tqdm that writes whole lines (never ``\\r`` or cursor moves), throttled to one per
    ``interval`` seconds, with the line at ``n == total`` always written once."""

    def __init__(self, *args, interval: float = LOG_INTERVAL_S, **kwargs):
        self.interval = float(interval)
        self._last_line_t: float | None = None
        self._last_line_state: tuple | None = None
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("bar_format", LINE_FORMAT)
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self):
        d = super().format_dict
        if d.get("prefix") and not d["prefix"].endswith(": "):  # Lightning's descriptions end in ": "
            d["prefix"] += ": "
        return d

    def display(self, msg=None, pos=None):
        if msg is not None:  # '' is tqdm clearing its line: there is nothing to clear in a log
            return False
        state = (self.n, self.total, self.desc)
        done = self.total is not None and self.n >= self.total
        now = time.monotonic()
        due = self._last_line_t is None or now - self._last_line_t >= self.interval
        if state == self._last_line_state or not (done or due):
            return True
        self.fp.write(self.__str__().rstrip() + "\n")
        self.fp.flush()
        self._last_line_t, self._last_line_state = now, state
        return True

    def close(self):
        if not self.disable:
            self.display()  # the final count, if no line showed it yet
        self.leave = False  # tqdm's leave=True path would add an empty line
        super().close()


def progress_bar(*args, file=None, interval: float = LOG_INTERVAL_S, **kwargs) -> plain_tqdm:
    """``tqdm(*args, **kwargs)`` on a terminal; a ``LineBar`` otherwise (see module doc)."""
    if is_terminal(file):
        return tqdm(*args, file=file, **kwargs)
    return LineBar(*args, file=file, interval=interval, **kwargs)
