"""The compiled contracts the package ships (backend/protocol/abi) are those of the sources on
disk: the same sources, byte for byte, and the same ABIs and bytecode as a fresh compile. When
one of these fails, a contract changed without ``make abi`` (``make compile`` runs it)."""

from __future__ import annotations

from pathlib import Path

from backend.protocol.abi import MANIFEST, abi, artifact, artifact_file, manifest
from backend.protocol.abi.export import ABI_DIR, render, source_sha256
from backend.protocol.deployments import CONTRACT_NAMES, PROJECT_ROOT

STALE = "the shipped ABIs are stale: run `make abi`"


def project_sources() -> set[str]:
    contracts = PROJECT_ROOT / "contracts"
    return {
        str(path.relative_to(PROJECT_ROOT))
        for path in contracts.rglob("*.sol")
        if ".cache" not in path.relative_to(contracts).parts
    }


def test_manifest_names_every_contract_with_its_source_hash() -> None:
    shipped = manifest()
    assert list(shipped["contracts"]) == list(CONTRACT_NAMES)
    for name, entry in shipped["contracts"].items():
        assert artifact(name).source == entry["source"]
        assert shipped["sources"][entry["source"]] == entry["sha256"]
    assert shipped["compiler"]["name"] == "solidity"
    assert shipped["compiler"]["version"].startswith("0.8.28+commit.")


def test_shipped_sources_are_the_sources_on_disk() -> None:
    """Cheap, without a compiler: every source compiled, and only those, unchanged since."""
    shipped = manifest()["sources"]
    assert set(shipped) == project_sources(), STALE
    changed = [s for s, digest in shipped.items() if source_sha256(s) != digest]
    assert changed == [], f"{STALE} ({', '.join(changed)} changed)"


def test_every_contract_ships_its_abi_and_deploy_bytecode() -> None:
    for name in CONTRACT_NAMES:
        compiled = artifact(name)
        assert compiled.name == name
        assert any(item["type"] == "constructor" for item in compiled.abi)
        assert compiled.bytecode.startswith("0x") and len(compiled.bytecode) > 1_000
        assert abi(name) is compiled.abi


def test_shipped_files_equal_a_fresh_compile() -> None:
    """ape compiles whatever changed since its last build, then the export is rendered again."""
    fresh = render()
    assert set(fresh) == {MANIFEST, *(artifact_file(n) for n in CONTRACT_NAMES)}
    shipped = {file: (Path(ABI_DIR) / file).read_text() for file in fresh}
    differ = [file for file in fresh if fresh[file] != shipped[file]]
    assert differ == [], f"{STALE} ({', '.join(differ)} differ)"
