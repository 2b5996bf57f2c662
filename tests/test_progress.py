"""Progress output: bars on a terminal, throttled plain lines in a log file."""
from __future__ import annotations

import io

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from annsnn import progress
from lightning_modules.progress import LogLineProgressBar, progress_callback


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    """A fake time.monotonic that the test advances."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress.time, "monotonic", c)
    return c


def test_terminal_keeps_its_bar_and_a_file_gets_lines():
    tty, log = Terminal(), io.StringIO()
    for stream in (tty, log):
        bar = progress.progress_bar(total=3, desc="sim", file=stream, mininterval=0)
        for _ in range(3):
            bar.update()
        bar.close()
    assert "\r" in tty.getvalue()
    assert not isinstance(progress.progress_bar(total=1, file=tty), progress.LineBar)
    assert "\r" not in log.getvalue() and log.getvalue().endswith("\n")
    assert log.getvalue().splitlines()[-1].startswith("sim: 100% 3/3")


def test_lines_are_throttled_to_one_per_interval_plus_the_last(clock):
    log = io.StringIO()
    bar = progress.progress_bar(total=100, desc="sim", file=log, interval=7.0, mininterval=0, leave=False)
    for _ in range(100):  # one step per simulated second, 100 s in all
        clock.t += 1.0
        bar.update()
        bar.set_postfix(acc=0.5)  # a refresh per step, as simulate and Lightning do
    bar.close()
    lines = log.getvalue().splitlines()
    counts = [int(line.split("% ")[1].split("/")[0]) for line in lines]
    assert counts == [0, *range(7, 100, 7), 100], lines  # the last line although not due
    assert "\r" not in log.getvalue()


def test_a_disabled_bar_writes_nothing():
    log = io.StringIO()
    bar = progress.progress_bar(total=5, file=log, disable=True)
    bar.update(5)
    bar.close()
    assert log.getvalue() == ""


def test_lightning_progress_is_lines_in_a_log(capsys, clock):
    assert isinstance(progress_callback(), LogLineProgressBar)  # pytest's stdout is not a terminal

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            clock.t += 1.0
            return self.lin(batch[0]).pow(2).mean()

        def validation_step(self, batch, _):
            self.log("val_loss", self.lin(batch[0]).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = DataLoader(TensorDataset(torch.randn(40, 2)), batch_size=2)  # 20 steps per epoch
    trainer = L.Trainer(max_epochs=3, callbacks=[LogLineProgressBar(interval=5.0)], logger=False,
                        enable_checkpointing=False, enable_model_summary=False, accelerator="cpu",
                        num_sanity_val_steps=0)
    capsys.readouterr()
    trainer.fit(Tiny(), data, data)
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b[" not in out
    epoch_lines = [line for line in out.splitlines() if line.startswith("Epoch ")]
    # 20 fake seconds per epoch at one line per 5 s: at most 4 throttled lines + the last, per epoch
    for e in range(3):
        mine = [line for line in epoch_lines if line.startswith(f"Epoch {e}:")]
        assert mine and mine[-1].startswith(f"Epoch {e}: 100% 20/20") and len(mine) <= 6, epoch_lines
