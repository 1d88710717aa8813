"""ModelFactory jobs for the API: each in a folder of its own, each trained by a worker process.

A job is a folder ``<root>/<id>`` (ids count up from 1) holding ``request.json`` (what to
train, and where the chain and content are), ``status.json`` (queued, then the worker's
running / succeeded / failed), ``worker.json`` (the worker's pid, once launched), the worker's
log and its ``artifacts/``. The folder is the whole state, so the runner survives restarts:

- a queued job that never started is started by the next runner;
- a worker still alive after the API restarted is adopted (training is not lost);
- a job whose status says it runs but whose worker is gone is marked failed, saying so.

At most ``max_jobs`` workers run at once (training takes every core); the others wait queued,
oldest first. Workers run in their own session, so stopping the API does not stop them.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.modelfactory.worker import (
    ARTIFACTS_DIR,
    FAILED,
    FINAL_STATES,
    QUEUED,
    REQUEST_FILE,
    RUNNING,
    STATUS_FILE,
    JobRequest,
    read_json,
    write_json_atomic,
)
from backend.protocol.deployments import PROJECT_ROOT

log = logging.getLogger(__name__)

WORKER_MODULE = "backend.modelfactory.worker"
WORKER_FILE = "worker.json"
WORKER_LOG = "worker.log"
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class JobInfo:
    """One job as the API shows it."""

    id: int
    state: str  # queued | running | succeeded | failed
    spec: dict[str, Any]
    submitted_at: float  # unix seconds
    started_at: float | None
    finished_at: float | None
    progress: dict[str, int] | None  # {"step", "total"} of training
    error: str | None
    summary: dict[str, Any] | None  # eval summary, once succeeded
    artifacts: list[str]  # files under the job's artifacts folder, relative, sorted


class JobRunner:
    """Queues jobs and runs each in a worker process, at most ``max_jobs`` at once."""

    def __init__(self, root: Path, *, max_jobs: int = 1, python: str = sys.executable) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, not {max_jobs}")
        self.root = Path(root)
        self.max_jobs = max_jobs
        self.python = python
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # launched by this runner
        self._adopted: dict[int, int] = {}  # job id -> pid of a worker from before a restart
        self._queue: list[int] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._recover()
        if self._queue or self._adopted:
            self._start_thread()

    # ------------------------------------------------------------ public

    def submit(self, request: JobRequest) -> JobInfo:
        """Queues ``request``; its worker starts as soon as a slot is free."""
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".incoming-"))
        write_json_atomic(staging / REQUEST_FILE, request.to_json())
        write_json_atomic(staging / STATUS_FILE, {"state": QUEUED, "submitted_at": _now()})
        with self._lock:
            job_id = self._next_id()
            while True:  # the rename makes the job appear whole, or not at all
                try:
                    staging.rename(self._dir(job_id))
                    break
                except OSError as exc:  # another runner on this folder took the id
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    job_id += 1
            self._queue.append(job_id)
            self._tick()
        self._start_thread()
        self._wake.set()
        info = self.get(job_id)
        assert info is not None
        return info

    def get(self, job_id: int) -> JobInfo | None:
        with self._lock:
            self._tick()
        return self._info(job_id)

    def list(self) -> list[JobInfo]:
        """Every job, oldest first."""
        with self._lock:
            self._tick()
        return [info for job_id in self._ids() if (info := self._info(job_id)) is not None]

    def close(self) -> None:
        """Stops following the workers (they keep running; the next runner adopts them)."""
        with self._lock:
            self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------ state

    def _dir(self, job_id: int) -> Path:
        return self.root / str(job_id)

    def _ids(self) -> list[int]:
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdecimal())

    def _next_id(self) -> int:
        ids = self._ids()
        return ids[-1] + 1 if ids else 1

    def _info(self, job_id: int) -> JobInfo | None:
        folder = self._dir(job_id)
        request = read_json(folder / REQUEST_FILE)
        status = read_json(folder / STATUS_FILE)
        if request is None or status is None:
            return None
        state = str(status.get("state", QUEUED))
        if state == QUEUED and (folder / WORKER_FILE).exists():
            state = RUNNING  # launched; the worker is starting up
        return JobInfo(
            id=job_id,
            state=state,
            spec=request.get("spec", {}),
            submitted_at=float(status.get("submitted_at", 0.0)),
            started_at=status.get("started_at"),
            finished_at=status.get("finished_at"),
            progress=status.get("progress"),
            error=status.get("error"),
            summary=status.get("summary"),
            artifacts=sorted(_files(folder / ARTIFACTS_DIR)),
        )

    def _recover(self) -> None:
        """Picks up where a previous runner stopped (see the module docstring)."""
        for leftover in self.root.glob(".incoming-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for job_id in self._ids():
            folder = self._dir(job_id)
            status = read_json(folder / STATUS_FILE) or {}
            if status.get("state") in FINAL_STATES:
                continue
            worker = read_json(folder / WORKER_FILE)
            if worker is None and status.get("state", QUEUED) == QUEUED:
                self._queue.append(job_id)
            elif worker is not None and _worker_alive(int(worker["pid"]), folder):
                log.info("job %d: adopting its running worker (pid %s)", job_id, worker["pid"])
                self._adopted[job_id] = int(worker["pid"])
            else:
                self._finished(job_id, None)

    def _finished(self, job_id: int, returncode: int | None) -> None:
        """The worker of ``job_id`` is gone; if it did not say how the job ended, the job failed."""
        folder = self._dir(job_id)
        status = read_json(folder / STATUS_FILE) or {}
        if status.get("state") in FINAL_STATES:
            return
        worker = read_json(folder / WORKER_FILE) or {}
        if returncode is None:
            reason = (
                f"the worker process (pid {worker.get('pid', '?')}) is gone: it was stopped, "
                "or the machine restarted, while the job ran"
            )
        else:
            reason = f"the worker process exited with code {returncode} before finishing"
        last = _last_line(folder / WORKER_LOG)
        if last:
            reason += f" (last log line: {last})"
        log.warning("job %d failed: %s", job_id, reason)
        status.update(state=FAILED, finished_at=_now(), error=reason)
        write_json_atomic(folder / STATUS_FILE, status)

    def _tick(self) -> None:
        """Reaps finished workers and starts queued jobs while slots are free (lock held)."""
        for job_id, child in list(self._children.items()):
            code = child.poll()
            if code is not None:
                del self._children[job_id]
                self._finished(job_id, code)
        for job_id, pid in list(self._adopted.items()):
            if not _worker_alive(pid, self._dir(job_id)):
                del self._adopted[job_id]
                self._finished(job_id, None)
        while not self._closed and self._queue and self._running() < self.max_jobs:
            self._launch(self._queue.pop(0))

    def _running(self) -> int:
        return len(self._children) + len(self._adopted)

    def _launch(self, job_id: int) -> None:
        folder = self._dir(job_id)
        with (folder / WORKER_LOG).open("ab") as out:
            child = subprocess.Popen(
                [self.python, "-m", WORKER_MODULE, str(folder.resolve())],
                cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        write_json_atomic(folder / WORKER_FILE, {"pid": child.pid, "launched_at": _now()})
        self._children[job_id] = child
        log.info("job %d: worker pid %d started", job_id, child.pid)

    # ------------------------------------------------------------ the follower thread

    def _start_thread(self) -> None:
        with self._lock:
            if not self._closed and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(
                    target=self._follow, name="modelfactory-jobs", daemon=True
                )
                self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                try:
                    self._tick()
                except Exception:  # a full disk must not end the thread that follows jobs
                    log.exception("following the ModelFactory jobs failed")
                busy = bool(self._children or self._adopted or self._queue)
            self._wake.wait(POLL_SECONDS if busy else None)
            self._wake.clear()


def _now() -> float:
    return round(time.time(), 3)


def _files(folder: Path) -> Iterator[str]:
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file():
                yield path.relative_to(folder).as_posix()


def _last_line(path: Path, limit: int = 300) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    last = next((line for line in reversed(lines) if line), "")
    return last[-limit:]


def _worker_alive(pid: int, folder: Path) -> bool:
    """Whether ``pid`` is a live worker of the job in ``folder`` (not a reused pid, not a
    zombie). Without ``/proc`` only liveness can be checked."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        cmdline = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    target = str(folder.resolve()).encode()
    return WORKER_MODULE.encode() in cmdline and target in cmdline
