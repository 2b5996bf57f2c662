"""Optuna storages for one machine or many workers, with crashed trials retried.

``make_storage(url)`` accepts:

- ``sqlite:///PATH`` (the default, ``sqlite:///<project>/optuna.db``): one machine, a few
  worker processes. SQLite locks the whole file on writes; keep it off network filesystems.
- a journal file: ``PATH.journal`` or ``journal:PATH`` (any file name). An append-only log,
  safe on a shared filesystem (NFS) with Optuna's symlink lock: the usual choice for a SLURM
  array without a database server.
- ``postgresql://USER:PASSWORD@HOST:PORT/DB`` (also ``postgresql+psycopg2://``): many workers
  on many machines.

Crashed workers: every storage gets a heartbeat. A worker records one every
``heartbeat_interval`` seconds while its trial runs; a RUNNING trial whose last heartbeat is
older than ``grace_period`` is set to FAIL by the next worker that starts or waits for a trial
(Optuna's ``fail_stale_trials``), and ``RetryHeartbeatStaleTrialCallback`` (Optuna 5's name for
``RetryFailedTrialCallback``, which is deprecated) enqueues a copy of it with the same
parameters, which the next free worker runs.

RDBStorage (SQLite, PostgreSQL) has that heartbeat built in. Optuna 5.0's JournalStorage has
none (optuna/optuna#6615; the PR adding it was not merged), so ``HeartbeatJournalStorage``
adds it through Optuna's own ``BaseHeartbeat`` interface: the heartbeat is a trial system
attribute ``studies:heartbeat:<trial_id>`` holding the worker's wall clock, and Optuna's
optimize loop, ``fail_stale_trials`` and the retry callback then work unchanged. The clocks of
the machines sharing a journal must agree to well within ``grace_period`` (NTP does that);
RDBStorage uses the database server's clock instead.
"""
from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORAGE = f"sqlite:///{PROJECT_ROOT / 'optuna.db'}"
DEFAULT_HEARTBEAT_INTERVAL = 10   # seconds between heartbeats of a running trial
DEFAULT_GRACE_PERIOD = 60         # a RUNNING trial silent for this long is declared dead
DEFAULT_MAX_RETRY = 3             # a trial whose workers keep dying is retried at most this often

ACCEPTED_FORMS = (
    "sqlite:///PATH (one machine; default sqlite:///optuna.db in the project root)",
    "PATH.journal or journal:PATH (journal file, e.g. on a shared filesystem)",
    "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (also postgresql+psycopg2://)",
)
HEARTBEAT_ATTR = "studies:heartbeat:"

_log = optuna.logging.get_logger(__name__)


class StorageError(RuntimeError):
    """The storage URL is valid but the storage cannot be opened."""


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", str(url))


def kind_of(url: str | None) -> str:
    """'sqlite', 'journal' or 'postgresql'; ValueError listing the accepted forms otherwise."""
    url = DEFAULT_STORAGE if not url else str(url)
    scheme = url.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url) else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite:///"):
            raise ValueError(f"bad SQLite storage URL {url!r}: use sqlite:///relative/path.db or "
                             "sqlite:////absolute/path.db")
        return "sqlite"
    if scheme == "journal":
        if not url[len("journal:"):].strip():
            raise ValueError(f"bad journal storage {url!r}: give a file, journal:PATH")
        return "journal"
    if scheme in ("postgresql", "postgresql+psycopg2", "postgres"):
        return "postgresql"
    if (not scheme or len(scheme) == 1) and url.endswith(".journal"):  # a path (or C:\...)
        return "journal"
    what = f"unknown storage scheme '{scheme}:'" if scheme else "not a storage URL"
    raise ValueError(f"{what} in {redact(url)!r}; accepted forms:\n  - " + "\n  - ".join(ACCEPTED_FORMS))


def sqlalchemy_url(url: str) -> str:
    """PostgreSQL URLs with an installed driver: SQLAlchemy 2.1 maps plain postgresql:// to
    psycopg 3, while this project pins psycopg2-binary; an explicit +driver is kept."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        import importlib.util
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def journal_path(url: str) -> Path:
    path = url[len("journal:"):] if url.lower().startswith("journal:") else url
    if path.startswith("//"):   # journal:///abs/path written like a URL
        path = path[2:]
    return Path(path).expanduser()


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """JournalStorage with Optuna's heartbeat interface (see the module docstring)."""

    def __init__(self, backend, heartbeat_interval: int | None = None,
                 grace_period: int | None = None,
                 heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None):
        super().__init__(backend)
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be a positive integer")
        if grace_period is not None and grace_period <= 0:
            raise ValueError("grace_period must be a positive integer")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

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
            beat = t.system_attrs.get(f"{HEARTBEAT_ATTR}{t._trial_id}")
            if beat is not None and now - float(beat) > self._grace():
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.heartbeat_stale_trial_callback


def make_storage(url: str | None = None, heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
                 grace_period: int | None = DEFAULT_GRACE_PERIOD,
                 max_retry: int | None = DEFAULT_MAX_RETRY, connect_timeout: int = 10):
    """An Optuna storage for ``url`` (see the module docstring), heartbeat and retries on.

    ``heartbeat_interval=None`` turns the heartbeat (and so retries) off. Raises ValueError for
    a URL of an unknown form and StorageError, naming the URL, when the storage cannot be opened.
    """
    url = DEFAULT_STORAGE if not url else str(url)
    kind = kind_of(url)
    if heartbeat_interval is not None:
        heartbeat_interval = int(heartbeat_interval)
        grace_period = int(grace_period) if grace_period else 2 * heartbeat_interval
        if grace_period <= heartbeat_interval:
            raise ValueError(f"grace_period ({grace_period} s) must exceed heartbeat_interval "
                             f"({heartbeat_interval} s), or every trial would look dead")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    else:
        grace_period, retry = None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if kind == "journal":
            path = journal_path(url)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                backend = JournalFileBackend(str(path))
                return HeartbeatJournalStorage(backend, heartbeat_interval, grace_period, retry)
            except OSError as e:
                raise StorageError(f"cannot open the Optuna journal file {path} (from {url!r}): "
                                   f"{e.strerror or e}") from None
        given = url
        if kind == "sqlite":
            db = url[len("sqlite:///"):]
            if db and db != ":memory:" and not db.startswith("file:"):
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for other workers' write locks
        else:
            given, url = url, sqlalchemy_url(url)
            engine_kwargs = {"connect_args": {"connect_timeout": int(connect_timeout)},
                             "pool_pre_ping": True}
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period, heartbeat_stale_trial_callback=retry)
        except ImportError as e:
            raise StorageError(f"cannot open the Optuna storage {redact(given)}: missing database "
                               f"driver ({e}); pip install psycopg2-binary") from None
        except Exception as e:  # sqlalchemy.exc.OperationalError and friends
            lines = str(getattr(e, "orig", None) or e).strip().splitlines()
            reason = "; ".join(r.strip() for r in lines[:3] if r.strip()) or type(e).__name__
            if reason[-1] not in ".?!":
                reason += "."
            hint = (" Check that the server runs and is reachable and that the user, password and "
                    "database exist." if kind == "postgresql" else "")
            raise StorageError(f"cannot open the Optuna storage {redact(given)}: {reason}{hint}") from None


def describe(storage) -> str:
    """Short human-readable name of a storage object (for reports; no password)."""
    if isinstance(storage, JournalStorage):
        backend = getattr(storage, "_backend", None)
        return f"journal:{getattr(backend, '_file_path', '?')}"
    if isinstance(storage, RDBStorage):
        return redact(storage.url)
    return type(storage).__name__
