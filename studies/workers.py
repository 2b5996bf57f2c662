"""Workers that share one Optuna study: the exact trial budget, retries, one setting per study.

Coordination happens only through the storage, with Optuna's own machinery: ``study.optimize``
with a callback, heartbeats and ``fail_stale_trials``, ``RetryHeartbeatStaleTrialCallback``.
There is no scheduler; any number of workers (local processes from ``--workers N``, SLURM
array tasks, or commands typed on several machines) may join or leave at any time.

``--n-trials N`` is the study's total: the number of finished trials (COMPLETE, and PRUNED for
studies that prune) the study should end with, however many workers run and however often a
command is rerun. Optuna's ``MaxTrialsCallback`` checks the count only after a trial, so two
workers that finish at the same moment both start one more and the study overshoots.
``ExactBudget`` makes the count exact:

- before each new trial a worker calls ``fail_stale_trials`` and starts a trial only when a
  retried trial is waiting or ``finished + running < N``; when every open slot is held by a
  running trial it waits, because that trial may still die and be retried;
- the first thing a trial does is ``guard``: trial numbers are handed out by the storage in
  creation order, so a trial counts the finished trials plus the running or waiting ones with
  smaller numbers; if these already fill the budget (two workers raced past the check above),
  it stops at once as FAIL with user attribute ``surplus = True`` and never evaluates anything;
  the worker prints one line for it (Optuna's warning and traceback for it are left out).

Every worker samples with its own seed, whatever started it (``--workers N``, a shell loop, a
SLURM array, a requeued or rerun task): ``register`` takes a ticket from the storage (a trial of
the companion study ``<study>:workers``) and the ticket's number is the worker's number. Optuna
hands out trial numbers in the storage itself, in one transaction per trial (PostgreSQL locks
the study's row for it, SQLite has one writer at a time, the journal appends under its file
lock), so no two workers of a study ever get the same number, and the sampler seed
``(--seed mod 1000) + 1000 x number`` is a one-to-one function of that number.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.trial import TrialState

from . import storage as st

ACTIVE = (TrialState.RUNNING, TrialState.WAITING)
SEED_STRIDE = 1000              # worker k samples with seed (--seed mod 1000) + 1000 k
REGISTRY_SUFFIX = ":workers"    # the companion study whose trials number the workers
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID",
              "SLURM_RESTART_COUNT")


class SurplusTrial(Exception):
    """The trial started after other workers had already filled the study's budget."""


def echo(message: str) -> None:
    """The default ``say``: one line on stdout, flushed (workers' output goes to log files)."""
    print(message, flush=True)


def counts(study: optuna.Study, finished=(TrialState.COMPLETE,)) -> dict[str, int]:
    n = {"finished": 0, "running": 0, "waiting": 0, "fail": 0, "total": 0}
    for t in study.get_trials(deepcopy=False):
        n["total"] += 1
        if t.state in finished:
            n["finished"] += 1
        elif t.state == TrialState.RUNNING:
            n["running"] += 1
        elif t.state == TrialState.WAITING:
            n["waiting"] += 1
        elif t.state == TrialState.FAIL:
            n["fail"] += 1
    return n


def fail_stale(study: optuna.Study) -> None:
    """Fail (and so retry) trials whose heartbeat stopped; a no-op without a heartbeat."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class ExactBudget:
    """Stop rule for ``study.optimize`` that ends the study with exactly ``n_trials`` finished
    trials across all workers (see the module docstring). Use as a callback and call
    ``guard(trial)`` first thing in the objective."""

    def __init__(self, n_trials: int, finished=(TrialState.COMPLETE,), poll: float = 2.0,
                 say=echo, tag: str | None = None):
        if n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {n_trials}")
        self.n_trials = int(n_trials)
        self.finished = tuple(finished)
        self.poll = float(poll)
        self.say = say
        self.tag = tag or f"[worker {os.getpid()}]"

    def slot_available(self, study: optuna.Study) -> bool:
        """True when this worker should start a trial, False when the study is done; waits
        while every open slot is held by a running trial (it may die and need a retry)."""
        said = False
        while True:
            fail_stale(study)
            n = counts(study, self.finished)
            if n["finished"] >= self.n_trials:
                return False
            if n["waiting"] or n["finished"] + n["running"] < self.n_trials:
                return True
            if not said:
                self.say(f"{self.tag} {n['finished']}/{self.n_trials} trials finished, "
                         f"{n['running']} running elsewhere: waiting for them (a dead one is retried)")
                said = True
            time.sleep(self.poll)

    def __call__(self, study: optuna.Study, trial) -> None:
        if not self.slot_available(study):
            study.stop()

    def guard(self, trial: optuna.trial.Trial) -> None:
        ahead = 0
        for t in trial.study.get_trials(deepcopy=False):
            if t.number == trial.number:
                continue
            if t.state in self.finished or (t.state in ACTIVE and t.number < trial.number):
                ahead += 1
        if ahead >= self.n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} not run: the study's {self.n_trials} trials "
                               "were already taken by other workers (marked FAIL, surplus)")


@dataclass(frozen=True)
class Worker:
    """One worker process of a study: its number (0, 1, ... in the order workers joined the
    study, handed out by the storage) and the sampler seed that follows from it."""
    number: int
    seed: int
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    slurm: dict = field(default_factory=lambda: {k: os.environ[k] for k in SLURM_VARS
                                                 if os.environ.get(k)})

    @property
    def tag(self) -> str:
        return f"[worker {self.number}]"

    def record(self) -> dict:
        return {"number": self.number, "sampler_seed": self.seed, "host": self.host,
                "pid": self.pid, **({"slurm": self.slurm} if self.slurm else {})}


def worker_seed(base: int, number: int) -> int:
    """The sampler seed of worker ``number``: one-to-one in ``number`` whatever ``base`` each
    command passes (its remainder mod 1000 only offsets it), and below 2**32 as numpy needs."""
    if number < 0:
        raise ValueError(f"worker number must be >= 0, got {number}")
    return int(base) % SEED_STRIDE + SEED_STRIDE * int(number)


def register(storage, study_name: str, base_seed: int, say=echo) -> Worker:
    """Join ``study_name`` as a new worker: take the next number from the storage (a trial of
    the study ``<study_name>:workers``, finished at once with the seed as its value and the
    host, pid and SLURM ids as user attributes), print one line, return the ``Worker``."""
    registry = st.create_or_load_study(storage, study_name + REGISTRY_SUFFIX,
                                       sampler=optuna.samplers.RandomSampler())
    with warnings.catch_warnings():   # "heartbeat is supposed to be used with optimize": no
        warnings.simplefilter("ignore", UserWarning)   # heartbeat is wanted for a ticket
        ticket = st.retry_race(registry.ask)
    worker = Worker(ticket.number, worker_seed(base_seed, ticket.number))
    for k, v in worker.record().items():
        ticket.set_user_attr(k, v)
    registry.tell(ticket, worker.seed)
    slurm = "".join(f", {k}={v}" for k, v in worker.slurm.items())
    say(f"{worker.tag} joined study '{study_name}' on {st.public_url(storage)}: sampler seed "
        f"{worker.seed} (host {worker.host}, pid {worker.pid}{slurm})")
    return worker


def workers_of(study: optuna.Study) -> list[dict]:
    """The workers that ran trials of ``study`` (``run_worker`` records each), by number."""
    recs = [v for k, v in study.user_attrs.items() if k.startswith("studies:worker:")]
    return sorted(recs, key=lambda r: r["number"])


def workers_line(study: optuna.Study) -> str:
    """'3 workers, sampler seeds 0, 1000, 2000' (for reports)."""
    ws = workers_of(study)
    if not ws:
        return "no worker recorded"
    return (f"{len(ws)} worker{'s' if len(ws) > 1 else ''}, sampler seed{'s' if len(ws) > 1 else ''} "
            + ", ".join(str(w["sampler_seed"]) for w in ws))


class SurplusFilter(logging.Filter):
    """Drops Optuna's two warnings (one with a traceback) for a trial stopped by ``guard``:
    the worker prints one line for it instead."""

    def __init__(self):
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SurplusTrial):
            return False
        m = re.match(r"Trial (\d+) failed", str(record.msg))
        return not (m and int(m.group(1)) in self.numbers)


@contextmanager
def quiet_surplus():
    """``SurplusFilter`` on the handlers of Optuna's logger (and the root's, where Optuna's
    records may propagate) for the duration."""
    f = SurplusFilter()
    handlers = [*logging.getLogger("optuna").handlers, *logging.getLogger().handlers]
    for h in handlers:
        h.addFilter(f)
    try:
        yield f
    finally:
        for h in handlers:
            h.removeFilter(f)


def run_worker(study: optuna.Study, objective, n_trials: int, finished=(TrialState.COMPLETE,),
               poll: float = 2.0, catch=(), say=echo, worker: Worker | None = None) -> dict[str, int]:
    """Run trials of ``study`` until it has ``n_trials`` finished trials in total. ``worker``
    (from ``register``) is recorded on the study (user attribute ``studies:worker:<number>``)
    and on each trial it starts (``worker_number``, ``sampler_seed``)."""
    budget = ExactBudget(n_trials, finished, poll, say, worker.tag if worker else None)
    tag = budget.tag
    if worker is not None:
        study.set_user_attr(f"studies:worker:{worker.number}", worker.record())

    def guarded(trial):
        if worker is not None:
            trial.set_user_attr("worker_number", worker.number)
            trial.set_user_attr("sampler_seed", worker.seed)
        try:
            budget.guard(trial)
        except SurplusTrial as e:
            quiet.numbers.add(trial.number)
            say(f"{tag} {e}")
            raise
        return objective(trial)

    with quiet_surplus() as quiet:
        while budget.slot_available(study):
            try:
                study.optimize(guarded, callbacks=[budget], catch=(SurplusTrial, *catch),
                               gc_after_trial=False)
            except UpdateFinishedTrialError as e:
                # our trial was declared dead by another worker while we ran it (heartbeat late
                # by more than the grace period): its result is rejected, its retry runs elsewhere
                say(f"{tag} {e} (declared dead by another worker: heartbeat late; "
                    "consider a longer --grace-period); continuing")
    return counts(study, finished)


def check_config(study: optuna.Study, config: dict) -> None:
    """Trials of one study must come from one setting: store it on first use, compare later."""
    key = "studies:config"
    stored = study.user_attrs.get(key)
    if stored is None:
        study.set_user_attr(key, config)
        return
    diff = {k: (stored.get(k), config.get(k)) for k in sorted(set(stored) | set(config))
            if stored.get(k) != config.get(k)}
    if diff:
        lines = "\n".join(f"  {k}: study has {a!r}, this command has {b!r}" for k, (a, b) in diff.items())
        raise SystemExit(f"study '{study.study_name}' already holds trials of a different setting:\n"
                         f"{lines}\nuse another --study-name (or the original settings) to continue")
