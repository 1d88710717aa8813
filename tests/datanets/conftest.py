"""A deployed, funded protocol on an anvil started per test module, ape connected in-process,
a directory content store, the ``datanet``/``audit`` ape scripts invoked in-process
(``CliRunner``, as ``ape run`` would, without its ~4 s start-up), and the Datanet setups the
tests share: instruction-pair files, Datanets created through the script or curated (and
published) directly, files contributed through the script."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from backend.devnet.anvil import Anvil, free_port

ROOT = Path(__file__).resolve().parents[2]
NETWORK = "ethereum:local:foundry"
OPEN = 10**18
CURATOR = "TEST::0"  # the ``--account`` of ape's test account 0, which creates and curates


def jsonl(*records: dict) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def pairs(n: int, tag: str) -> bytes:
    """``n`` instruction pairs, their questions tagged (distinct files, distinct CIDs)."""
    return jsonl(*({"prompt": f"{tag} question {i}?", "response": f"answer {i}"} for i in range(n)))


def number(label: str, output: str) -> int:
    """The number after ``label`` in a script's output."""
    match = re.search(rf"{label} (\d+)", output)
    assert match, f"no '{label} <n>' in:\n{output}"
    return int(match.group(1))


def load_script(name: str) -> Any:
    """``scripts/<name>.py`` as a module, loaded as ``ape run`` loads it."""
    spec = importlib.util.spec_from_file_location(
        f"_script_{name}", ROOT / "scripts" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def invoke(command: click.Command, *args: str, account: str | None = None, code: int = 0) -> str:
    """Runs ``command args --network ... [--account ...]`` in-process; checks the exit code."""
    extra = ["--network", NETWORK] + (["--account", account] if account else [])
    result = CliRunner().invoke(command, [*map(str, args), *extra])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, f"{args}: exit {result.exit_code}:\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    with Anvil(port=free_port()) as node:
        yield node


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def connected(
    anvil: Anvil, store_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """ape connected to this module's anvil; deployments and store of this module."""
    from ape import networks

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("APE_FOUNDRY_HOST", anvil.url)
        patch.setenv(
            "OPENLEDGER_DEPLOYMENTS", str(tmp_path_factory.mktemp("chain") / "deployments.json")
        )
        patch.setenv("OPENLEDGER_STORE", str(store_dir))
        with networks.parse_network_choice(NETWORK):
            yield


@pytest.fixture(scope="module")
def accounts(connected: None) -> list[Any]:
    """ape's test accounts: 0 governance and treasury; 1..4 users funded with 1,000 OPEN."""
    from ape import accounts as ape_accounts

    return list(ape_accounts.test_accounts)[:6]


@pytest.fixture(scope="module")
def protocol(accounts: list[Any]) -> Any:
    from backend.protocol.contracts import ensure_protocol

    p, _ = ensure_protocol(accounts[0])
    for user in accounts[1:5]:
        p.token.transfer(user, 1_000 * OPEN, sender=accounts[0])
    return p


@pytest.fixture(scope="module")
def store(store_dir: Path) -> Any:
    from backend.storage.local import DirectoryStore

    return DirectoryStore(store_dir)


@pytest.fixture(scope="module")
def datanet_cli(protocol: Any) -> Callable[..., str]:
    """``ape run datanet ...``, in-process."""
    cli = load_script("datanet").cli

    def run(*args: Any, account: str | None = None, code: int = 0) -> str:
        return invoke(cli, *args, account=account, code=code)

    return run


@pytest.fixture(scope="module")
def audit_cli(protocol: Any) -> Callable[..., str]:
    """``ape run audit ...``, in-process."""
    cli = load_script("audit").cli

    def run(*args: Any, code: int = 0) -> str:
        return invoke(cli, *args, code=code)

    return run


@pytest.fixture
def make_datanet(protocol: Any, store: Any, accounts: list[Any]) -> Callable[..., tuple]:
    """A Datanet with ``n`` stored contributions from account 1, all approved but the last
    (rejected), its version 1 published when ``publish``; returns ``(datanet id, approved
    ids)``."""
    from backend.datanets.create import create_datanet
    from backend.datanets.formats import DataFormat, DatanetMetadata
    from backend.datanets.publish import publish_version

    curator, contributor = accounts[0], accounts[1]

    def make(name: str, n: int = 4, publish: bool = False) -> tuple[int, list[int]]:
        meta = DatanetMetadata(name, "audit test", "CC0-1.0", DataFormat.INSTRUCTION)
        datanet = create_datanet(protocol.sdk(curator), store, meta).datanet_id
        files = [pairs(i + 1, f"{name}-{i}") for i in range(n)]
        cids = [store.put(f) for f in files]
        receipt = protocol.datanets.contributeBatch(
            datanet, cids, [len(f) for f in files], sender=contributor
        )
        ids = [int(e.contributionId) for e in protocol.datanets.Contributed.from_receipt(receipt)]
        protocol.datanets.review(datanet, ids, [True] * (n - 1) + [False], sender=curator)
        if publish:
            publish_version(protocol.sdk(curator), store, datanet)
        return datanet, ids[:-1]

    return make


@pytest.fixture
def new_datanet(tmp_path: Path, datanet_cli: Callable[..., str]) -> Callable[..., int]:
    """Creates a Datanet of instruction pairs (its own metadata) owned by the curator, through
    ``datanet create``."""
    from backend.datanets.formats import DataFormat, DatanetMetadata

    def create(name: str, *options: str) -> int:
        meta = DatanetMetadata(name, "test data", "CC0-1.0", DataFormat.INSTRUCTION, 4096)
        path = tmp_path / f"{name}.json"
        path.write_bytes(meta.to_json_bytes())
        return number("datanet", datanet_cli("create", path, *options, account=CURATOR))

    return create


@pytest.fixture
def contribute(tmp_path: Path, datanet_cli: Callable[..., str]) -> Callable[..., str]:
    """Writes ``files`` (name -> bytes) under the test's folder and contributes them to
    ``datanet`` as ``account`` in one ``datanet contribute``; returns its output."""

    def run(datanet: int, account: str, files: dict[str, bytes]) -> str:
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        return datanet_cli("contribute", datanet, *(tmp_path / n for n in files), account=account)

    return run
