"""``python -m backend.protocol.abi.export`` (``make abi``): writes the ABIs and deploy bytecode
of ape's compiled contracts, and their manifest, into this package.

ape compiles what changed first, so the files always match the sources on disk;
:func:`render` is also what ``tests/test_abi_manifest.py`` compares the shipped files with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from backend.protocol.abi import MANIFEST, artifact_file
from backend.protocol.deployments import CONTRACT_NAMES, PROJECT_ROOT

log = logging.getLogger(__name__)

ABI_DIR = Path(__file__).resolve().parent
COMPILER_SETTINGS = ("evmVersion", "optimizer", "viaIR", "remappings")  # what shapes the output


def source_sha256(source_id: str, root: Path = PROJECT_ROOT) -> str:
    """The SHA-256 of source ``source_id`` (a path relative to ``root``), ``0x``-hex."""
    return "0x" + hashlib.sha256((root / source_id).read_bytes()).hexdigest()


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def render() -> dict[str, str]:
    """File name -> the text the package ships, from ape's project (compiling what changed)."""
    from backend.protocol.contracts import project  # ape: only the exporter needs it

    p = project()
    contracts = p.load_contracts()
    compilers = [
        c for c in p.manifest.compilers or [] if set(CONTRACT_NAMES) & set(c.contractTypes or [])
    ]
    if len(compilers) != 1:
        raise RuntimeError(f"expected one compiler of {CONTRACT_NAMES}, ape lists {compilers}")
    compiler = compilers[0]
    files: dict[str, str] = {}
    entries: dict[str, dict[str, str]] = {}
    for name in CONTRACT_NAMES:
        contract_type = contracts[name].contract_type
        source = str(contract_type.source_id)
        files[artifact_file(name)] = _dump({
            "contractName": name,
            "sourceId": source,
            "abi": [item.model_dump(mode="json", by_alias=True) for item in contract_type.abi],
            "bytecode": str(contract_type.deployment_bytecode.bytecode),
        })  # fmt: skip
        entries[name] = {"source": source, "sha256": source_sha256(source)}
    settings = compiler.settings or {}
    files[MANIFEST] = _dump({
        "compiler": {
            "name": compiler.name,
            "version": compiler.version,
            "settings": {k: settings[k] for k in COMPILER_SETTINGS if k in settings},
        },
        "contracts": entries,
        "sources": {s: source_sha256(s) for s in sorted(p.manifest.sources or {})},
    })  # fmt: skip
    return files


def write(folder: Path = ABI_DIR) -> list[str]:
    """Writes :func:`render`'s files into ``folder``; returns the names of those that changed."""
    changed = []
    for file, text in render().items():
        path = folder / file
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(file)
    return changed


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    changed = write()
    if changed:
        log.info("abi: wrote %s into %s", ", ".join(changed), ABI_DIR)
    else:
        log.info("abi: %s is up to date", ABI_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
