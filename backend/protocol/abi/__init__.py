"""The protocol's compiled contracts as this package ships them, so that nothing that reaches
the chain needs ape or a compiler: ``<Contract>.json`` holds a contract's ABI and its deploy
bytecode, ``manifest.json`` the compiler, its settings and the SHA-256 of every source compiled.

The files are written from ape's build by ``make abi`` (``make compile`` runs it; see
:mod:`.export`), and ``tests/test_abi_manifest.py`` fails when they differ from a fresh compile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from backend.protocol.deployments import CONTRACT_NAMES

ABI = list[dict[str, Any]]  # a contract's JSON ABI, as solc writes it
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ContractArtifact:
    """One compiled contract. Shared and cached: read it, never change it."""

    name: str
    source: str  # the source file, relative to the project root
    abi: ABI
    bytecode: str  # 0x-hex creation bytecode (constructor arguments go after it)


def artifact_file(name: str) -> str:
    return f"{name}.json"


def _read(file: str) -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(file).read_text())


@cache
def artifact(name: str) -> ContractArtifact:
    """The shipped artifact of contract ``name`` (one of :data:`CONTRACT_NAMES`)."""
    if name not in CONTRACT_NAMES:
        raise KeyError(f"no shipped artifact for {name!r}; the package ships {CONTRACT_NAMES}")
    data = _read(artifact_file(name))
    return ContractArtifact(
        name=data["contractName"], source=data["sourceId"], abi=data["abi"],
        bytecode=data["bytecode"],
    )  # fmt: skip


def abi(name: str) -> ABI:
    """The ABI of contract ``name``."""
    return artifact(name).abi


@cache
def manifest() -> dict[str, Any]:
    """``manifest.json``: ``compiler`` (name, version, settings), ``contracts`` (name -> source
    and its SHA-256) and ``sources`` (every source compiled -> its SHA-256)."""
    return _read(MANIFEST)


__all__ = ["ABI", "CONTRACT_NAMES", "ContractArtifact", "abi", "artifact", "manifest"]
