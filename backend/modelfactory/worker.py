"""``python -m backend.modelfactory.worker JOB_DIR``: one training job in a process of its own.

The API's job runner (``backend/api/jobs.py``) writes ``JOB_DIR/request.json`` and starts this
process; it trains with :func:`~backend.modelfactory.jobs.run_job` into ``JOB_DIR/artifacts``
and keeps ``JOB_DIR/status.json`` current: ``running`` (with the training step, written at most
once a second), then ``succeeded`` with the eval summary or ``failed`` with the error. Every
write replaces the file atomically, so a reader never sees half of one.

The chain is read over plain web3 (the API has no ape network context): the request names the
RPC URL and the deployment the API's index follows. The published version is checked before
the training libraries are even imported, so a job that cannot start fails in a second or two.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from backend.modelfactory.spec import JobSpec, JobSpecError
from backend.protocol.deployments import Deployment
from backend.protocol.web3_protocol import Web3Protocol

log = logging.getLogger("backend.modelfactory.worker")

REQUEST_FILE = "request.json"
STATUS_FILE = "status.json"
ARTIFACTS_DIR = "artifacts"
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
FINAL_STATES = (SUCCEEDED, FAILED)
PROGRESS_INTERVAL = 1.0  # seconds between two progress writes, at least


@dataclass(frozen=True)
class JobRequest:
    """What a worker needs: the spec, and where the chain, the content and base models are."""

    spec: JobSpec
    rpc_url: str  # the chain's JSON-RPC URL
    chain_id: int  # the chain the protocol is deployed on ...
    contracts: dict[str, str]  # ... and its contracts: name -> address
    store: str  # a content store as ``open_store`` takes it: a directory or an IPFS API URL
    models_dir: Path  # the built-in base model is converted under ``models_dir/models``

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_json(),
            "rpc_url": self.rpc_url,
            "chain_id": self.chain_id,
            "contracts": self.contracts,
            "store": self.store,
            "models_dir": str(self.models_dir),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRequest:
        return cls(
            spec=JobSpec.from_json(data["spec"]),
            rpc_url=str(data["rpc_url"]),
            chain_id=int(data["chain_id"]),
            contracts={str(k): str(v) for k, v in data["contracts"].items()},
            store=str(data["store"]),
            models_dir=Path(data["models_dir"]),
        )


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Writes ``data`` to ``path`` through a synced temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class StatusFile:
    """``status.json`` of one job, written by its worker (the runner wrote ``queued``)."""

    def __init__(self, job_dir: Path) -> None:
        self.path = job_dir / STATUS_FILE
        self.status: dict[str, Any] = read_json(self.path) or {}
        self._last_write = 0.0

    def _write(self, **changes: Any) -> None:
        self.status.update(changes)
        write_json_atomic(self.path, self.status)
        self._last_write = time.monotonic()

    def running(self) -> None:
        self._write(state=RUNNING, pid=os.getpid(), started_at=_now(), progress=None)

    def progress(self, step: int, total: int) -> None:
        """Keeps the latest step; writes it unless the last write was under a second ago
        (the final state's write carries the last step in any case)."""
        self.status["progress"] = {"step": step, "total": total}
        if time.monotonic() - self._last_write >= PROGRESS_INTERVAL:
            self._write()

    def succeeded(self, summary: dict[str, Any]) -> None:
        self._write(state=SUCCEEDED, finished_at=_now(), summary=summary, error=None)

    def failed(self, error: str) -> None:
        self._write(state=FAILED, finished_at=_now(), error=error)


def _now() -> float:
    return round(time.time(), 3)


def summarize(trained: Any) -> dict[str, Any]:
    """What a job's status shows of a :class:`~backend.modelfactory.jobs.TrainedJob`: the data
    it trained on, training throughput, the eval report's numbers (held-out loss for SFT,
    preference accuracy and margin for DPO); samples and curves stay in the artifacts."""
    report = trained.eval_report
    summary: dict[str, Any] = {
        "method": report.get("method"),
        "seconds": report.get("seconds"),
        "data": {
            "examples": trained.examples,
            "skipped_rows": trained.skipped_rows,
            "train_examples": trained.train_examples,
            "eval_examples": trained.eval_examples,
            "base_model_cid": trained.base_model_cid,
            "datanet_manifest_cid": trained.datanet_manifest_cid,
        },
        "training": {
            **_scalars(report.get("training") or {}),
            "tokens_per_second": round(trained.tokens_per_second, 1),
        },
        "eval": {k: v for k, v in _scalars(report).items() if k not in ("method", "seconds")},
    }
    if "held_out_preferences" in report:
        summary["held_out_preferences"] = report["held_out_preferences"]
    return summary


def _scalars(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, int | float | str)}


def _protocol(request: JobRequest) -> Web3Protocol:
    """The deployment on the request's chain; refuses a chain that is not the deployment's."""
    # only the addresses are read; the rest of a deployment record is not needed here
    deployment = Deployment(request.chain_id, "", 0, "", "", request.contracts)
    return Web3Protocol.connect(request.rpc_url, deployment)


def run(job_dir: Path) -> int:
    """Runs the job in ``job_dir``; returns the process exit code (0: succeeded)."""
    from backend.modelfactory.chain import ChainLookupError, published_version

    status = StatusFile(job_dir)
    status.running()
    try:
        data = read_json(job_dir / REQUEST_FILE)
        if data is None:
            raise JobSpecError(f"{job_dir / REQUEST_FILE} is missing or not a JSON object")
        request = JobRequest.from_json(data)
        spec = request.spec
        protocol = _protocol(request)
        published_version(protocol, spec.datanet_id, spec.version)  # before importing torch
        from backend.modelfactory.jobs import run_job
        from backend.storage.open import open_store

        trained = run_job(
            spec, protocol, open_store(request.store), job_dir / ARTIFACTS_DIR,
            request.models_dir, progress=False, on_step=status.progress,
        )  # fmt: skip
    except (Exception, KeyboardInterrupt) as exc:
        from backend.modelfactory.dataset import DatasetError

        expected: tuple[type[BaseException], ...] = (
            JobSpecError, DatasetError, ChainLookupError, ConnectionError, KeyboardInterrupt,
        )  # fmt: skip
        jobs = sys.modules.get("backend.modelfactory.jobs")  # not imported to fail fast
        if jobs is not None:
            expected += (jobs.JobError,)
        log.error("job %s failed", job_dir, exc_info=not isinstance(exc, expected))
        status.failed(str(exc) if isinstance(exc, expected) else f"{type(exc).__name__}: {exc}")
        return 1
    status.succeeded(summarize(trained))
    log.info("job %s succeeded", job_dir)
    return 0


def _terminated(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"the worker was stopped by signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m backend.modelfactory.worker JOB_DIR\n")
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, _terminated)
    return run(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
