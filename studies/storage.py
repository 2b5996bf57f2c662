"""Optuna storages for one machine or many workers, with crashed trials retried.

``make_storage(url)`` accepts:

- ``sqlite:///PATH`` (the default, ``sqlite:///<project>/store/optuna.db``): one machine, a few
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
(in ``optuna_private``: it needs Optuna's private heartbeat base) adds it: the heartbeat is a
trial system attribute holding the worker's wall clock, and Optuna's optimize loop,
``fail_stale_trials`` and the retry callback then work unchanged. The clocks of the machines
sharing a journal must agree to well within ``grace_period`` (NTP does that); RDBStorage uses
the database server's clock instead.

Workers that open a fresh database at the same moment race to create Optuna's schema and the
study (https://github.com/optuna/optuna/issues/1092). ``make_storage`` opens a database
under a lock (so one process creates the schema) and, like ``create_or_load_study``, retries
those errors with jittered backoff; ``--role init`` creates both once before the workers
start.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from .optuna_private import HEARTBEAT_ATTR, HeartbeatJournalStorage  # noqa: F401 (re-exported)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The default storages share one ignored folder, store/ (or $ANNSNN_STORE_DIR), with the MLflow
# store (tracking.STORE_DIR; not imported here, so that workers need not import MLflow).
STORE_DIR = Path(os.environ.get("ANNSNN_STORE_DIR") or PROJECT_ROOT / "store").expanduser().resolve()
DEFAULT_STORAGE = f"sqlite:///{STORE_DIR / 'optuna.db'}"
DEFAULT_HEARTBEAT_INTERVAL = 10   # seconds between heartbeats of a running trial
DEFAULT_GRACE_PERIOD = 60         # a RUNNING trial silent for this long is declared dead
DEFAULT_MAX_RETRY = 3             # a trial whose workers keep dying is retried at most this often

ACCEPTED_FORMS = (
    "sqlite:///PATH (one machine; default sqlite:///store/optuna.db in the project root)",
    "PATH.journal or journal:PATH (journal file, e.g. on a shared filesystem)",
    "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (also postgresql+psycopg2://)",
)
# Processes that open a fresh database together race to create its schema (and the study),
# https://github.com/optuna/optuna/issues/1092. These messages mean another process won;
# opening again works.
SCHEMA_RACE = ("already exists", "UNIQUE constraint failed", "duplicate key value violates unique",
               "database is locked", "deadlock detected")
RACE_ATTEMPTS = 8                 # tries before a race error is passed on
RACE_BACKOFF = 0.05               # first wait (seconds); doubles each try, with jitter
SCHEMA_LOCK_KEY = 1092            # PostgreSQL advisory lock held while opening (any fixed int)


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
                return HeartbeatJournalStorage(backend, heartbeat_interval, grace_period, retry,
                                               path=str(path))
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
            return retry_race(lambda: open_rdb(kind, url, engine_kwargs, lambda: RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                grace_period=grace_period, heartbeat_stale_trial_callback=retry)))
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


def open_rdb(kind: str, url: str, engine_kwargs: dict, make: Callable):
    """``make()`` (an RDBStorage) such that only one process creates a fresh database's schema:
    the others wait on a lock (a file lock for SQLite, one machine; an advisory lock for
    PostgreSQL, released with its connection if the process dies) and, once it exists, open
    the database together. Optuna's lazy imports happen before the lock, not under it."""
    import alembic.command  # noqa: F401
    import alembic.migration  # noqa: F401
    import alembic.script  # noqa: F401
    import sqlalchemy
    import sqlalchemy.orm  # noqa: F401

    def ready(conn) -> bool:   # alembic stamps the schema version last
        return (sqlalchemy.inspect(conn).has_table("alembic_version") and
                conn.execute(sqlalchemy.text("SELECT count(*) FROM alembic_version")).scalar() > 0)

    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        with engine.connect() as c:
            if ready(c):
                return make()
        if kind == "sqlite":
            import fcntl
            key = hashlib.sha1(str(Path(url[len("sqlite:///"):]).expanduser().resolve()).encode())
            with open(Path(tempfile.gettempdir()) / f"optuna-schema-{key.hexdigest()[:16]}.lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)     # released when the file closes
                with engine.connect() as c:
                    if not ready(c):
                        return make()
        else:
            with engine.connect() as c:
                c.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})"))
                try:
                    if not ready(c):
                        return make()
                finally:
                    c.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({SCHEMA_LOCK_KEY})"))
                    c.commit()
    finally:
        engine.dispose()
    return make()


def is_race(e: BaseException) -> bool:
    """True for the errors of processes racing to create the schema or the study."""
    text = str(getattr(e, "orig", None) or e)
    return isinstance(e, DuplicatedStudyError) or any(m in text for m in SCHEMA_RACE)


def retry_race(fn: Callable, attempts: int = RACE_ATTEMPTS, backoff: float = RACE_BACKOFF):
    """``fn()``, again after a jittered wait while it fails with a race error (``is_race``)."""
    for k in range(attempts):
        try:
            return fn()
        except Exception as e:
            if k == attempts - 1 or not is_race(e):
                raise
            time.sleep(backoff * 2 ** k * random.uniform(0.5, 1.5))


def create_or_load_study(storage, study_name: str, **kw) -> optuna.Study:
    """``optuna.create_study(load_if_exists=True)`` that survives other workers creating the
    same study at the same moment (DuplicatedStudyError or a schema race: load it)."""
    def once():
        try:
            return optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, **kw)
        except DuplicatedStudyError:
            return optuna.load_study(study_name=study_name, storage=storage, sampler=kw.get("sampler"),
                                     pruner=kw.get("pruner"))
    return retry_race(once)


def public_url(storage) -> str:
    """``storage`` (an URL or a storage object) in the form other tools accept, for every line
    and report that shows it, password hidden: ``optuna-dashboard URL`` and, for SQLite and
    PostgreSQL, ``optuna.load_study(storage=URL)``.

    - PostgreSQL with the driver named: ``postgresql+psycopg2://...`` (SQLAlchemy 2.1 maps a
      bare ``postgresql://`` to psycopg 3, which is not installed, so that form fails there);
    - SQLite with an absolute path (``sqlite:////abs/optuna.db``), valid from any folder;
    - a journal: its absolute file path, which optuna-dashboard opens as a journal (and which
      ``--storage`` takes when it ends in ``.journal``). ``optuna.load_study`` reads a journal
      only through ``JournalStorage(JournalFileBackend(path))``: a string is always an RDB URL.
    """
    if isinstance(storage, HeartbeatJournalStorage):
        return str(Path(storage.path).expanduser().resolve())
    url = storage.url if isinstance(storage, RDBStorage) else str(storage or DEFAULT_STORAGE)
    kind = kind_of(url)
    if kind == "journal":
        return str(journal_path(url).resolve())
    if kind == "sqlite":
        db = url[len("sqlite:///"):]
        if db and db != ":memory:" and not db.startswith("file:"):
            url = f"sqlite:///{Path(db).expanduser().resolve()}"
        return url
    return redact(sqlalchemy_url(url))


def describe(storage) -> str:
    """Short name of a storage object (no password), part of a study's MLflow identity
    (``tracking.study_key``): kept as it was so reruns find their parent run; lines and
    reports show ``public_url`` instead."""
    if isinstance(storage, HeartbeatJournalStorage):
        return f"journal:{storage.path}"
    if isinstance(storage, RDBStorage):
        return redact(storage.url)
    return type(storage).__name__
