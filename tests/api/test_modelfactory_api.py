"""ModelFactory jobs over HTTP on a real anvil: a job trains a tiny model in its own worker
process on a published Datanet version and reports progress and its eval summary; the next job
waits queued; bad specs are refused naming the field; the runner survives restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from web3 import Web3

from backend.api.config import Settings
from backend.api.jobs import JobInfo, JobRunner
from backend.api.main import create_app
from backend.datanets.formats import DataFormat, DatanetMetadata
from backend.datanets.manifest import Manifest, ManifestEntry
from backend.devnet.anvil import Anvil, free_port
from backend.indexer.chain import ChainClient
from backend.indexer.sync import Indexer, IndexerConfig
from backend.modelfactory.spec import JobSpec, TrainSettings
from backend.modelfactory.worker import JobRequest
from backend.storage.local import DirectoryStore
from tests.engine.tiny_tokenizer import build_tiny_checkpoint
from tests.protocol_history import OPEN, History, make_history

TINY_TRAINING = {"max_steps": 2, "batch_size": 4, "max_length": 64}


@dataclass
class Chain:
    anvil: Anvil
    history: History
    store: DirectoryStore
    root: Path
    datanet_id: int  # a Datanet with version 1 published as the Datanet CLI publishes it

    def request(self, version: int) -> JobRequest:
        spec = JobSpec(self.datanet_id, version, train=TrainSettings(max_steps=1))
        deployment = self.history.protocol.deployment
        return JobRequest(spec, self.anvil.url, deployment.chain_id, deployment.contracts,
                          str(self.store.root), self.root)  # fmt: skip


def sums(tag: str, n: int) -> bytes:
    rows = ({"prompt": f"{tag}: what is {i} plus {i}?", "response": f"It is {2 * i}."}
            for i in range(n))  # fmt: skip
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def publish_datanet(h: History, store: DirectoryStore) -> int:
    """An instruction Datanet of Alice's and Bob's files, version 1 published with a real
    manifest (the history's own Datanet 1 has a stand-in manifest a job cannot read)."""
    p, r = h.protocol, h.roles
    registry = p["DatanetRegistry"].functions
    metadata = DatanetMetadata("sums", "small sums", "CC0-1.0", DataFormat.INSTRUCTION)
    p.transact(r.curator, registry.createDatanet(store.put(metadata.to_json_bytes()), OPEN, 1,
                                                 r.treasury))  # fmt: skip
    datanet_id = registry.datanetCount().call()
    entries = []
    for who, tag in ((r.alice, "alice"), (r.bob, "bob")):
        data = sums(tag, 12)
        cid = store.put(data)
        p.transact(who, registry.contribute(datanet_id, cid, len(data)))
        entries.append(ManifestEntry(registry.contributionCount().call(), cid, who, len(data)))
    p.transact(r.curator, registry.review(datanet_id, [e.id for e in entries], [True, True]))
    manifest = Manifest.of(datanet_id, 1, entries)
    manifest_cid = store.put(manifest.to_json_bytes())
    p.transact(r.curator, registry.publishVersion(datanet_id, manifest.root, manifest_cid, 2))
    return datanet_id


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("modelfactory_api")
    store = DirectoryStore(root / "content")
    with Anvil(port=free_port()) as anvil:
        history = make_history(Web3(Web3.HTTPProvider(anvil.url)), store)
        datanet_id = publish_datanet(history, store)
        indexer = Indexer(root / "index.db", history.protocol.deployment,
                          ChainClient(anvil.url), IndexerConfig(confirmations=0))  # fmt: skip
        indexer.sync_once()
        indexer.close()
        yield Chain(anvil, history, store, root, datanet_id)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_chat"))


@pytest.fixture(scope="module")
def client(chain: Chain) -> Iterator[TestClient]:
    settings = Settings(db_path=chain.root / "index.db", content_dir=chain.store.root,
                        data_dir=chain.root / "api", rpc_url=chain.anvil.url,
                        models_dir=chain.root)  # fmt: skip
    app = create_app(settings, chain.store)
    with TestClient(app, base_url="http://testserver/api/v1") as client:
        yield client
    app.state.jobs.close()


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def finished(status: dict[str, Any] | JobInfo) -> bool:
    state = status["state"] if isinstance(status, dict) else status.state
    return state in ("succeeded", "failed")


def test_a_job_trains_in_its_worker_while_the_next_waits_queued(client, chain, base):
    spec = {"datanet_id": chain.datanet_id, "version": 1, "base_model": str(base),
            "train": TINY_TRAINING}  # fmt: skip
    started = client.post("/modelfactory/jobs", json=spec)
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["status_url"] == f"/api/v1/modelfactory/jobs/{job['id']}"
    assert started.headers["location"] == job["status_url"]
    doomed = client.post("/modelfactory/jobs", json={**spec, "train": {"max_steps": 1}}).json()
    status_url = f"/modelfactory/jobs/{job['id']}"
    assert client.get(status_url).json()["state"] == "running"
    assert client.get(f"/modelfactory/jobs/{doomed['id']}").json()["state"] == "queued"

    status = wait_for(lambda: client.get(status_url).json(), finished, timeout=150)
    assert status["state"] == "succeeded", status
    assert status["progress"] == {"step": 2, "total": 2}
    assert status["spec"]["train"]["max_steps"] == 2 and status["error"] is None
    summary = status["summary"]
    assert summary["method"] == "sft" and summary["data"]["examples"] == 24
    assert summary["data"]["train_examples"] + summary["data"]["eval_examples"] == 24
    assert summary["eval"]["examples"] == summary["data"]["eval_examples"]
    assert summary["eval"]["adapter_loss"] > 0 and summary["eval"]["base_loss"] > 0
    assert summary["training"]["steps"] == 2 and summary["training"]["tokens_per_second"] > 0
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "job.json",
            "training_manifest.json", "eval_report.json", "loss_curve.json", "loss_curve.png",
            } <= set(status["artifacts"])  # fmt: skip
    assert status["started_at"] <= status["finished_at"]

    # the next job starts once the first is done; stopping its worker fails it, saying why
    status_file = chain.root / "api" / "jobs" / str(doomed["id"]) / "status.json"
    worker = wait_for(lambda: json.loads(status_file.read_text()), lambda s: "pid" in s, 30)
    os.kill(worker["pid"], signal.SIGTERM)
    doomed_url = f"/modelfactory/jobs/{doomed['id']}"
    stopped = wait_for(lambda: client.get(doomed_url).json(), finished, timeout=30)
    assert stopped["state"] == "failed" and stopped["summary"] is None
    assert stopped["error"] == "the worker was stopped by signal SIGTERM"
    listed = client.get("/modelfactory/jobs").json()
    assert [(j["id"], j["state"]) for j in listed["items"]] == [
        (job["id"], "succeeded"), (doomed["id"], "failed"),
    ]  # fmt: skip


def test_bad_specs_are_refused_naming_the_field(client, chain, base):
    def refused(body: Any, code: int = 422) -> str:
        answer = client.post("/modelfactory/jobs", json=body)
        assert answer.status_code == code, answer.text
        return answer.json()["reason"]

    ok = {"datanet_id": chain.datanet_id, "version": 1, "base_model": str(base)}
    assert refused({**ok, "lora": {"rank": 0}}) == "lora.rank must be a positive integer, not 0"
    assert "unknown job spec field(s) ['train.step']" in refused({**ok, "train": {"step": 2}})
    assert "method 'dpo' needs model_id" in refused({**ok, "method": "dpo"})
    assert "train.learning_rate must be in (0.0, 1.0]" in refused(
        {**ok, "train": {"learning_rate": 3}}
    )
    assert refused({**ok, "lora": {"target_modules": ["q_proj", 7]}}).startswith(
        "lora.target_modules must be a non-empty list of names, not ('q_proj', 7)"
    )
    assert refused({**ok, "lora": {"target_modules": ["x", 7]}}).startswith(
        "lora.target_modules must be a non-empty list of names, not ('x', 7)"
    )
    assert refused({**ok, "datanet_id": 2**63}) == (
        f"datanet_id must be at most {2**63 - 1}, not {2**63}"
    )
    answer = client.post(
        "/modelfactory/jobs", json={**ok, "lora": {"rank": 0}, "train": {"seed": -1}}
    )
    assert [e["loc"] for e in answer.json()["errors"]] == [["lora", "rank"], ["train", "seed"]]
    assert refused({**ok, "train": {"batch_size": 8.5}}) == (
        "train.batch_size must be a positive integer, not 8.5"
    )
    assert refused([ok]) == "a job spec must be a JSON object"
    answer = client.post("/modelfactory/jobs", content=b"{not json")
    assert answer.status_code == 400 and "not JSON" in answer.json()["reason"]
    assert refused({**ok, "version": 2}, 404) == (
        f"Datanet {chain.datanet_id} version 2 is not published (published versions: 1..1)"
    )
    assert refused({**ok, "datanet_id": 99}, 404) == "Datanet 99 not found"
    assert refused({**ok, "method": "dpo", "model_id": 9}, 404) == "model 9 not found"
    assert "no config.json" in refused({**ok, "base_model": str(base / "missing")}, 404)
    assert "train.device must be one of ['cpu', 'cuda']" in refused({**ok, "train": {"device": 1}})
    if not torch.cuda.is_available():
        assert refused({**ok, "train": {"device": "cuda"}}, 409) == (
            "train.device is 'cuda' but this server has no CUDA device"
        )
    assert client.get("/modelfactory/jobs/999").status_code == 404


def test_no_job_is_accepted_while_the_chain_it_would_read_does_not_answer(chain, tmp_path):
    settings = Settings(db_path=chain.root / "index.db", content_dir=chain.store.root,
                        data_dir=tmp_path, rpc_url=f"http://127.0.0.1:{free_port()}")  # fmt: skip
    with TestClient(create_app(settings, chain.store), base_url="http://t/api/v1") as client:
        answer = client.post("/modelfactory/jobs", json={"datanet_id": chain.datanet_id,
                                                         "version": 1})  # fmt: skip
        assert answer.status_code == 409
        assert "does not answer" in answer.json()["reason"]
        assert client.get("/modelfactory/jobs").json()["total"] == 0


def test_the_worker_fails_fast_on_a_version_the_chain_has_not_published(chain, tmp_path):
    request = chain.request(version=5)
    job = tmp_path / "job"
    job.mkdir()
    (job / "request.json").write_text(json.dumps(request.to_json()))
    # a torch that cannot be imported: the check must come before the training libraries
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('torch was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "backend.modelfactory.worker", str(job)],
                         capture_output=True, timeout=60, env=env)  # fmt: skip
    assert run.returncode == 1, run.stderr.decode()[-2000:]
    status = json.loads((job / "status.json").read_text())
    assert status["state"] == "failed" and status["pid"] > 0
    assert status["error"] == (
        f"Datanet {chain.datanet_id} version 5 is not published (published versions: 1..1)"
    )
    assert not (job / "artifacts").exists()


def test_a_restarted_runner_adopts_live_workers_and_starts_queued_jobs(chain, tmp_path):
    first = JobRunner(tmp_path, max_jobs=1)
    running, queued = first.submit(chain.request(9)), first.submit(chain.request(9))
    assert (first.get(running.id).state, first.get(queued.id).state) == ("running", "queued")
    first.close()  # the API stops; its worker keeps going
    second = JobRunner(tmp_path, max_jobs=1)
    assert second.get(running.id).state == "running"  # adopted, not restarted
    jobs = wait_for(second.list, lambda jobs: all(map(finished, jobs)), timeout=60)
    second.close()
    for job in jobs:  # each ran once, to its own end (not "gone")
        assert job.state == "failed" and "version 9 is not published" in (job.error or "")


def test_a_job_whose_worker_died_is_reported_failed_with_the_reason(chain, tmp_path):
    runner = JobRunner(tmp_path / "watched")
    job = runner.submit(chain.request(9))
    pid = json.loads((tmp_path / "watched" / str(job.id) / "worker.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    info = wait_for(lambda: runner.get(job.id), finished, timeout=30)
    runner.close()
    assert info.state == "failed"
    assert info.error.startswith("the worker process exited with code -9 before finishing")

    unwatched = JobRunner(tmp_path / "unwatched")
    job = unwatched.submit(chain.request(9))
    pid = json.loads((tmp_path / "unwatched" / str(job.id) / "worker.json").read_text())["pid"]
    unwatched.close()  # the API goes away ...
    os.kill(pid, signal.SIGKILL)  # ... and so does the worker, while the job runs
    os.waitpid(pid, 0)
    restarted = JobRunner(tmp_path / "unwatched")
    info = restarted.get(job.id)
    restarted.close()
    assert info is not None and info.state == "failed"
    assert info.error.startswith(f"the worker process (pid {pid}) is gone")
