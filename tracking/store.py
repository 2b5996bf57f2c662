"""The MLflow tracking store, created or upgraded in one step before anything logs to it.

MLflow builds a SQLite store with about a hundred alembic migrations, one after another,
in the file itself: a process killed in the middle (Ctrl-C in the very first run) leaves
a file at an intermediate revision, sometimes with a stray ``_alembic_tmp_<table>`` from
a half-done table rebuild, and every later open then fails. ``ensure_store`` therefore

- creates a new store in a temporary file beside the target and renames it into place
  when the schema is complete (a killed creation leaves only the temporary file, which
  the next call deletes);
- upgrades an older store on a copy, renamed into place when done, the original kept as
  ``<name>.before-upgrade-<time>``;
- repairs a half-migrated store: without runs it is rebuilt (the broken file kept as
  ``<name>.broken-<time>``); with runs, the copy has its stray ``_alembic_tmp_*`` tables
  resolved (dropped, or renamed back when the original table is gone) and is upgraded;
  what cannot be repaired is a ``StoreError`` with one line saying what to do.

All of it under a file lock, so two runs starting together do it once. Other stores
(a tracking server, PostgreSQL) are left to MLflow and their administrators.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

_READY: set[str] = set()   # stores checked by this process


class StoreError(RuntimeError):
    """The tracking store exists but cannot be opened or repaired; the message is one line."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]).expanduser().resolve()


@contextmanager
def _locked(db: Path):
    key = hashlib.sha1(str(db).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"annsnn-mlflow-store-{key}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def head_revision() -> str:
    """The schema revision this MLflow version expects."""
    from mlflow.store.db.utils import _get_latest_schema_revision
    return _get_latest_schema_revision()


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}


def inspect(db: Path) -> dict:
    """What the file holds: its tables, alembic revision, stray temporary tables and runs."""
    con = sqlite3.connect(db)   # read-write: a hot journal left by a killed writer is rolled back
    try:
        tables = _tables(con)
        rev = (con.execute("select version_num from alembic_version").fetchone() or (None,))[0] \
            if "alembic_version" in tables else None
        runs = con.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
    finally:
        con.close()
    return {"tables": tables, "revision": rev, "runs": runs,
            "stray": sorted(t for t in tables if t.startswith("_alembic_tmp_"))}


def _scratch(db: Path, what: str) -> Path:
    return db.with_name(f".{db.name}.{what}-{os.getpid()}")


def _remove_db(p: Path) -> None:
    for q in (p, Path(f"{p}-journal"), Path(f"{p}-wal"), Path(f"{p}-shm")):
        q.unlink(missing_ok=True)


def _build(db: Path) -> None:
    """Create or upgrade the schema of ``db`` in place (a scratch file: nobody else opens it)."""
    import sqlalchemy
    from mlflow.store.db.utils import _all_tables_exist, _initialize_tables, _upgrade_db

    engine = sqlalchemy.create_engine(f"sqlite:///{db}", poolclass=sqlalchemy.pool.NullPool)
    try:
        if not _all_tables_exist(engine):
            _initialize_tables(engine)       # the initial tables, then every migration
        else:
            _upgrade_db(engine)
    finally:
        engine.dispose()


def _resolve_stray(db: Path, stray: list[str]) -> None:
    """An interrupted alembic table rebuild copies ``t`` into ``_alembic_tmp_t``, drops ``t``
    and renames the copy: drop the copy while ``t`` exists, else the copy is ``t``."""
    con = sqlite3.connect(db)
    try:
        tables = _tables(con)
        for tmp in stray:
            orig = tmp[len("_alembic_tmp_"):]
            con.execute(f'drop table "{tmp}"' if orig in tables else f'alter table "{tmp}" rename to "{orig}"')
        con.commit()
    finally:
        con.close()


def _forget_connections(db: Path) -> None:
    """Close MLflow's pooled connections to ``db`` in this process: after the file is
    replaced they point at the old one, which SQLite then reports as read-only."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    except ImportError:
        return
    for uri, engine in list(getattr(SqlAlchemyStore, "_engine_map", {}).items()):
        if sqlite_path(uri) == db:
            engine.dispose()


def _copy(src: Path, dst: Path) -> None:
    _remove_db(dst)
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


def ensure_store(uri: str, quiet: bool = False) -> str:
    """Make the SQLite store at ``uri`` complete at this MLflow's schema; returns ``uri``.

    Cheap when the store is fine (one read of its table list). Raises ``StoreError`` (one
    line) when a damaged store holding runs cannot be repaired."""
    db = sqlite_path(uri)
    if db is None or str(db) in _READY:
        return uri
    db.parent.mkdir(parents=True, exist_ok=True)
    say = (lambda m: None) if quiet else (lambda m: print(f"[tracking] {m}", flush=True))
    with _locked(db):
        for old in db.parent.glob(f".{db.name}.*-*"):     # scratch files of killed processes
            _remove_db(old)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if not db.exists() or db.stat().st_size == 0:
            tmp = _scratch(db, "creating")
            _build(tmp)
            os.replace(tmp, db)
            _READY.add(str(db))
            return uri
        try:
            info = inspect(db)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{db} is not a readable SQLite database ({e}); move it aside to "
                             "start a new tracking store") from None
        head = head_revision()
        if info["revision"] == head and not info["stray"]:
            _READY.add(str(db))
            return uri
        known = info["revision"] is None or _known_older(info["revision"])
        state = f"schema {info['revision'] or 'none'}" + (f", stray {', '.join(info['stray'])}" if info["stray"] else "")
        if info["runs"] == 0 and known:
            what = f"rebuilding the tracking store {db.name}, which holds no runs ({state})"
            keep = db.with_name(f"{db.name}.broken-{stamp}")
        elif not info["stray"] and known:
            what = f"upgrading the tracking store {db.name} ({state}) to schema {head}"
            keep = db.with_name(f"{db.name}.before-upgrade-{stamp}")
        else:
            what = f"repairing the tracking store {db.name}, left half-migrated by an interrupted run ({state})"
            keep = db.with_name(f"{db.name}.broken-{stamp}")
        tmp = _scratch(db, "repairing")
        try:
            if info["runs"] == 0 and known:
                _build(tmp)                                # nothing logged yet: build afresh
            else:
                _copy(db, tmp)
                _resolve_stray(tmp, inspect(tmp)["stray"])
                _build(tmp)
        except Exception as e:  # noqa: BLE001 -- any failure: keep the original untouched
            _remove_db(tmp)
            last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise StoreError(f"{what} failed ({last[:200]}); {db} is unchanged: move it aside to start a "
                             "new tracking store, or run `mlflow db upgrade` on a copy") from None
        shutil.copy2(db, keep)
        os.replace(tmp, db)
        _forget_connections(db)
        say(f"{what}: done, the old file is kept as {keep.name}")
        _READY.add(str(db))
    return uri


def _known_older(rev: str) -> bool:
    """Whether ``rev`` is a revision this MLflow knows (an older, complete schema)."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    try:
        return ScriptDirectory.from_config(_get_alembic_config(db_url="")).get_revision(rev) is not None
    except Exception:  # noqa: BLE001 -- an unknown revision (a newer MLflow wrote it)
        return False
