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
  it stops at once as FAIL with user attribute ``surplus = True`` and never evaluates anything.
"""
from __future__ import annotations

import os
import time
import warnings

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.trial import TrialState

ACTIVE = (TrialState.RUNNING, TrialState.WAITING)


class SurplusTrial(Exception):
    """The trial started after other workers had already filled the study's budget."""


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
                 say=print):
        if n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {n_trials}")
        self.n_trials = int(n_trials)
        self.finished = tuple(finished)
        self.poll = float(poll)
        self.say = say

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
                self.say(f"[worker {os.getpid()}] {n['finished']}/{self.n_trials} trials finished, "
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
            raise SurplusTrial(f"trial {trial.number} started after the budget of {self.n_trials} "
                               "trials was filled by other workers; not evaluated")


def run_worker(study: optuna.Study, objective, n_trials: int, finished=(TrialState.COMPLETE,),
               poll: float = 2.0, catch=(), say=print) -> dict[str, int]:
    """Run trials of ``study`` until it has ``n_trials`` finished trials in total."""
    budget = ExactBudget(n_trials, finished, poll, say)

    def guarded(trial):
        budget.guard(trial)
        return objective(trial)

    while budget.slot_available(study):
        try:
            study.optimize(guarded, callbacks=[budget], catch=(SurplusTrial, *catch),
                           gc_after_trial=False)
        except UpdateFinishedTrialError as e:
            # our trial was declared dead by another worker while we ran it (heartbeat late by
            # more than the grace period): its result is rejected, its retry runs elsewhere
            say(f"[worker {os.getpid()}] {e} (declared dead by another worker: heartbeat late; "
                "consider a longer --grace-period); continuing")
    return counts(study, finished)


def seeded(sampler_cls, seed: int | None, worker_index: int, **kw):
    """A sampler per worker: distinct seeds, or every worker would propose the same points."""
    return sampler_cls(seed=None if seed is None else seed + 1000 * worker_index, **kw)


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
