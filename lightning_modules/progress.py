"""Lightning's progress bar for logs: whole lines, not carriage-return redraws.

Lightning draws its bars on stdout. On a terminal ``progress_callback`` returns its
usual ``TQDMProgressBar``; otherwise (SLURM, CI, ``> log``) the same bar drawn with
``annsnn.progress.LineBar``: a line at most every ``interval`` seconds and one at the
end of each epoch and each evaluation.
"""
from __future__ import annotations

import sys

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from annsnn.progress import LOG_INTERVAL_S, LineBar, is_terminal


class _LineTqdm(LineBar):
    format_num = staticmethod(Tqdm.format_num)  # Lightning's padding of metric values


class LogLineProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` whose bars are ``LineBar``s on stdout."""

    def __init__(self, interval: float = LOG_INTERVAL_S):
        super().__init__()
        self.interval = interval

    def _bar(self, desc: str, leave: bool) -> _LineTqdm:
        return _LineTqdm(desc=desc, disable=self.is_disabled, leave=leave, file=sys.stdout,
                         interval=self.interval)

    def init_sanity_tqdm(self):
        return self._bar(self.sanity_check_description, leave=False)

    def init_train_tqdm(self):
        return self._bar(self.train_description, leave=True)

    def init_validation_tqdm(self):
        return self._bar(self.validation_description, leave=self.trainer.state.fn == "validate")

    def init_predict_tqdm(self):
        return self._bar(self.predict_description, leave=True)

    def init_test_tqdm(self):
        return self._bar(self.test_description, leave=True)


def progress_callback(interval: float = LOG_INTERVAL_S) -> TQDMProgressBar:
    """The progress bar callback for a Trainer: bars on a terminal, lines in a log."""
    return TQDMProgressBar() if is_terminal(sys.stdout) else LogLineProgressBar(interval)
