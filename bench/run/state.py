"""One seed's work folder, runs/<preset>/seed<k>/: a lock that says who holds it, and the
state file that lets ``--resume`` continue where an interrupted job stopped.

The lock is an advisory ``flock`` on ``seed<k>/lock``: the kernel drops it when its holder
exits, however it exits (SIGKILL included), so a lock can never outlive its process on
this host. The file also records the holder (pid, host, start time): a second job names
the holder in its one-line refusal, and a job that finds the record of a holder that died
without releasing says that it takes the lock over. (flock on a network file system
depends on its locking support; the record then still names the holder.)
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from ..report.seeds import IGNORED_KEYS

LOCK_FILE = "lock"
STATE_FILE = "state.json"


class LockBusy(SystemExit):
    """Another job holds this seed's lock: exit (status 1) with one line that names it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {started}"
            + (f", {holder['what']}" if holder.get("what") else ""))


class RunLock:
    """Exclusive use of one seed's work folder by one job.

    ``wait``: block until the holder releases instead of refusing (prints who it waits for).
    """

    def __init__(self, folder: Path, what: str = "", wait: bool = False):
        self.path = Path(folder) / LOCK_FILE
        self.what, self.wait = what, wait
        self._fd: int | None = None

    def _record(self) -> dict:
        try:
            return json.loads(os.pread(self._fd, 4096, 0) or b"{}")
        except (ValueError, OSError):
            return {}

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._record()
            if not self.wait:
                os.close(self._fd)
                self._fd = None
                raise LockBusy(f"error: {self.path.parent} is in use by another run ({_describe(holder)}); "
                               f"wait for it to finish, or ask to wait for it (ANNSNN_LOCK_WAIT=1)")
            print(f"[bench] waiting for {self.path.parent}: held by {_describe(holder)}", flush=True)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        old = self._record()
        if old:  # the previous holder did not release: it died (SIGKILL, node failure)
            here = old.get("host") == socket.gethostname()
            why = ("no longer running" if here and not _alive(int(old.get("pid", -1)))
                   else "lock released" if not here else "lock released, pid reused")
            print(f"[bench] taking over the stale lock of {self.path.parent} from {_describe(old)} ({why})",
                  flush=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "what": self.what}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(me).encode(), 0)
        os.fsync(self._fd)
        return self

    def release(self) -> None:
        """Empty the record, then unlock (the file stays: unlinking it would let a waiting job
        lock a file that a third job no longer sees)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _comparable(cfg: dict, robustness_measured: bool = True) -> dict:
    """The preset without the keys seed jobs of one preset may differ in (``seeds``, its words
    and budget: bench.report.seeds.IGNORED_KEYS), and without its ``robustness`` block while
    no robustness unit was measured (a stage resized before it starts changes nothing that
    the state holds)."""
    drop = set(IGNORED_KEYS) | (set() if robustness_measured else {"robustness"})
    return {k: v for k, v in cfg.items() if k not in drop}


def robustness_measured(data: dict) -> bool:
    """Whether a state holds any robustness measurement (a unit or the rows)."""
    rob = data.get("robustness") or {}
    return bool(rob.get("units") or "rows" in rob)


class State:
    """runs/<preset>/seed<k>/state.json: the MLflow run of each ANN, whether it finished
    training, each finished conversion, the robustness rows, and the wall time of all
    segments so far (``elapsed``, brought up to date at every save).

    A fresh (not ``resume``) start replaces the folder's earlier contents, except the lock
    its caller holds, and says what it replaces. ``writer``: False on DDP ranks other than 0.
    ``base``: the wall seconds of the seed's earlier segments.
    """

    def __init__(self, folder: Path, cfg: dict, seed: int, resume: bool, writer: bool = True,
                 t0: float | None = None):
        self.folder = Path(folder)
        self.path = self.folder / STATE_FILE
        self.writer = writer
        self.t0 = t0 or time.time()   # this segment's start (the job's, for its first seed)
        if resume and self.path.exists():
            self.data = json.loads(self.path.read_text())
            before = self.data.get("preset", {})
            measured = robustness_measured(self.data)
            if _comparable(before, measured) != _comparable(cfg, measured):
                raise SystemExit(f"--resume: the preset differs from the interrupted run's "
                                 f"({self.path}); rerun without --resume to start over")
            if before.get("robustness") != cfg.get("robustness"):
                print(f"[bench] --resume: the robustness block changed before the stage measured "
                      f"anything; the new one applies", flush=True)
            self.data["preset"] = cfg   # what the rest of the seed runs under
            self.data["segments"] = self.data.get("segments", 1) + 1
        else:
            if resume:
                print(f"[bench] nothing to resume in {self.folder}; starting a fresh run of seed {seed}")
            if self.writer:
                self._replace_earlier()
            self.data = {"preset": cfg, "seed": seed, "groups": {}, "started": self.t0,
                         "elapsed": 0.0, "segments": 1}
        self.base = float(self.data.get("elapsed", 0.0))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.save()

    def _replace_earlier(self) -> None:
        """Delete an earlier run's files in this seed's folder, naming them first."""
        old = [p for p in self.folder.iterdir() if p.name != LOCK_FILE] if self.folder.exists() else []
        if not old:
            return
        what = "an earlier run"
        try:
            prev = json.loads(self.path.read_text())
            groups = prev.get("groups", {})
            status = ("finished" if groups and all(g.get("complete") for g in groups.values())
                      else "unfinished")
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(prev.get("started", 0)))
            runs = ", ".join(f"{k} {g['run_id']}" for k, g in groups.items() if g.get("run_id"))
            what = f"the {status} run started {when}" + (f" (MLflow runs: {runs})" if runs else "")
        except (OSError, ValueError):
            pass
        ckpts = sorted(str(p) for p in self.folder.rglob("*.ckpt"))
        print(f"[bench] a fresh run replaces {what} in {self.folder}"
              + (f"; deleting its checkpoints {', '.join(ckpts)}" if ckpts else ""), flush=True)
        for p in old:
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    @property
    def elapsed(self) -> float:
        """Wall seconds of all segments, this one up to now."""
        return self.base + (time.time() - self.t0)

    def group(self, key: str) -> dict:
        return self.data["groups"].setdefault(key, {"records": []})

    def save(self) -> None:
        if not self.writer:
            return
        self.data["elapsed"] = self.elapsed
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)
