"""Every use of Optuna's private API in this project, in one place, each where no public one
exists, and ``check()``, which fails with the Optuna version when an upgrade changes them.

- ``BaseHeartbeat`` (``optuna.storages._heartbeat``) and its hook ``_get_stale_trial_ids``:
  Optuna 5.0's JournalStorage has no heartbeat (optuna/optuna#6615), and the heartbeat
  interface that ``fail_stale_trials`` and the optimize loop call is only this private base.
- ``FrozenTrial._trial_id``: the storage-wide trial id the heartbeat is keyed by; the public
  ``number`` counts per study only.
- ``optuna.storages._rdb.models.TrialHeartbeatModel``: the only way to read an RDB heartbeat
  (the tests wait for one before killing a worker).
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_ATTR = "studies:heartbeat:"   # journal heartbeat: trial system attr + trial id
_log = optuna.logging.get_logger(__name__)


def trial_id(trial: FrozenTrial) -> int:
    """The storage's id of ``trial`` (private: FrozenTrial exposes only the per-study number)."""
    return trial._trial_id


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """JournalStorage with Optuna's heartbeat interface: the heartbeat is a trial system
    attribute ``studies:heartbeat:<trial_id>`` holding the worker's wall clock."""

    def __init__(self, backend, heartbeat_interval: int | None = None,
                 grace_period: int | None = None,
                 heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
                 path: str | None = None):
        super().__init__(backend)
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be a positive integer")
        if grace_period is not None and grace_period <= 0:
            raise ValueError("grace_period must be a positive integer")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback
        self.path = path    # for messages: the backend keeps its file name privately

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, f"{HEARTBEAT_ATTR}{trial_id}", time.time())
        except UpdateFinishedTrialError:
            # Another worker declared this trial dead (no heartbeat within the grace period):
            # its result will be rejected; the retry runs elsewhere.
            _log.warning(f"trial id {trial_id} was declared dead by another worker (heartbeat "
                         f"older than {self._grace()} s); increase --grace-period if workers are busy")

    def _grace(self) -> int:
        return self.grace_period or 2 * (self.heartbeat_interval or 0)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            # keyed by trial id: a retried trial inherits the system attrs of the dead one,
            # but not its heartbeat; a trial without any heartbeat is never stale (as in RDB)
            beat = t.system_attrs.get(f"{HEARTBEAT_ATTR}{trial_id(t)}")
            if beat is not None and now - float(beat) > self._grace():
                stale.append(trial_id(t))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.heartbeat_stale_trial_callback


def last_heartbeat(storage, trial: FrozenTrial):
    """The last recorded heartbeat of ``trial`` (None before the first one)."""
    if isinstance(storage, HeartbeatJournalStorage):
        return storage.get_trial(trial_id(trial)).system_attrs.get(f"{HEARTBEAT_ATTR}{trial_id(trial)}")
    from optuna.storages._rdb import models
    session = storage.scoped_session()
    try:
        return models.TrialHeartbeatModel.where_trial_id(trial_id(trial), session)
    finally:
        session.close()


def check() -> None:
    """RuntimeError naming the Optuna version if a private API used above has changed."""
    problems = []
    hooks = {"record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval",
             "get_heartbeat_stale_trial_callback"}
    abstract = set(getattr(BaseHeartbeat, "__abstractmethods__", ()))
    if abstract != hooks:
        problems.append(f"BaseHeartbeat's abstract methods are {sorted(abstract)}, expected {sorted(hooks)}")
    if "_get_stale_trial_ids" not in inspect.getsource(optuna.storages.fail_stale_trials):
        problems.append("fail_stale_trials no longer asks the storage's _get_stale_trial_ids")
    study = optuna.create_study()
    study.enqueue_trial({})
    frozen = study.get_trials(deepcopy=False)[0]
    if not isinstance(getattr(frozen, "_trial_id", None), int):
        problems.append("FrozenTrial has no integer _trial_id")
    try:
        from optuna.storages._rdb import models
        if not callable(getattr(models.TrialHeartbeatModel, "where_trial_id", None)):
            problems.append("TrialHeartbeatModel.where_trial_id is gone")
    except (ImportError, AttributeError) as e:
        problems.append(f"optuna.storages._rdb.models.TrialHeartbeatModel: {e}")
    if problems:
        raise RuntimeError(f"Optuna {optuna.__version__} changed private APIs that "
                           f"studies/optuna_private.py relies on: " + "; ".join(problems)
                           + ". Pin the tested Optuna version or adapt that module.")
