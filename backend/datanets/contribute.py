"""Contribute files to a Datanet: validate every file, store it, register what is new.

The steps are separate so a command can show progress for each; all are idempotent: a file is
validated before anything is stored or sent, storing is by CID, and a CID the Datanet already
holds (``contributionIdOf``) is skipped, so a re-run after a crash finishes the job. A CID that
another account registered and lost (rejected, or withdrawn after the review timeout) is free
and registered again: that is how an author takes back a file a squatter front-ran.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.datanets.formats import ContributionFormatError, DatanetMetadata, LineError
from backend.datanets.formats import validate_contribution as check_format
from backend.datanets.registry import DatanetError, read_datanet
from backend.protocol.enums import ContributionStatus
from backend.protocol.web3_protocol import Web3Protocol
from backend.sdk import OpenLedger
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)
DEFAULT_BATCH_SIZE = 50  # CIDs per contributeBatch transaction


@dataclass(frozen=True)
class FileProblem:
    path: Path
    errors: tuple[LineError, ...]
    total: int  # errors found (more than listed when many)

    def __str__(self) -> str:
        shown = "; ".join(str(e) for e in self.errors)
        more = (
            f" (and {self.total - len(self.errors)} more)" if self.total > len(self.errors) else ""
        )
        return f"{self.path}: {shown}{more}"


class ContributionRefusedError(DatanetError):
    """Files that do not match the Datanet's format: nothing was stored or sent."""

    def __init__(self, problems: list[FileProblem]) -> None:
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{len(problems)} file(s) refused, nothing stored or sent:\n{lines}")
        self.problems = problems


@dataclass(frozen=True)
class CheckedFile:
    path: Path
    size: int  # bytes
    records: int  # JSONL lines (1 for text)


@dataclass(frozen=True)
class StoredFile:
    path: Path
    size: int
    cid: str


@dataclass(frozen=True)
class Registered:
    """A file's place in the Datanet: its contribution id, and whether it was registered now."""

    path: Path
    cid: str
    size: int
    contribution_id: int
    registered_now: bool


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, folders expanded recursively (sorted; hidden entries skipped)."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in f.relative_to(path).parts)
                if f.is_file() and not hidden:
                    found.append(f)
        elif path.is_file():
            found.append(path)
        else:
            raise DatanetError(f"{path} is neither a file nor a folder")
    if not found:
        raise DatanetError("no files to contribute")
    return list(dict.fromkeys(found))


def check_files(metadata: DatanetMetadata, files: Sequence[Path]) -> list[CheckedFile]:
    """Validates every file against ``metadata``; raises :class:`ContributionRefusedError` listing
    every bad file with its line errors."""
    checked: list[CheckedFile] = []
    problems: list[FileProblem] = []
    for path in files:
        size = path.stat().st_size
        try:
            if size > metadata.max_file_bytes:  # refuse before reading a huge file
                reason = f"{size} bytes, above this Datanet's limit of {metadata.max_file_bytes}"
                problems.append(FileProblem(path, (LineError(0, reason),), 1))
                continue
            records = check_format(metadata, path.read_bytes())
        except ContributionFormatError as why:
            problems.append(FileProblem(path, tuple(why.errors), why.total))
            continue
        checked.append(CheckedFile(path, size, records))
    if problems:
        raise ContributionRefusedError(problems)
    return checked


def store_files(store: ContentStore, files: Iterable[CheckedFile]) -> Iterator[StoredFile]:
    """Stores and pins each file, yielding its CID."""
    for f in files:
        cid = store.put(f.path)
        store.pin(cid)
        yield StoredFile(f.path, f.size, cid)


HOLDING_STATUSES = (ContributionStatus.PENDING, ContributionStatus.APPROVED)  # hold their CID


def split_registered(
    p: Web3Protocol, datanet_id: int, stored: Sequence[StoredFile], contributor: str | None = None
) -> tuple[list[Registered], list[StoredFile]]:
    """``(already registered, to register)``; a CID given twice is registered once. A CID
    whose latest registration no longer holds it (rejected or withdrawn) is to register again,
    unless it was ``contributor``'s own (a re-run must not resubmit a file curators refused)."""
    done: list[Registered] = []
    todo: dict[str, StoredFile] = {}
    for f in stored:
        registry = p["DatanetRegistry"].functions
        existing = int(registry.contributionIdOf(datanet_id, f.cid).call())
        if existing:
            c = registry.contribution(existing).call()
            own = contributor is not None and c.contributor.lower() == contributor.lower()
            if int(c.status) in HOLDING_STATUSES or own:
                done.append(Registered(f.path, f.cid, f.size, existing, registered_now=False))
                continue
            log.info("%s: contribution %d lost it; registering it again", f.cid, existing)
            todo[f.cid] = f
        elif f.cid in todo:
            log.warning("%s has the same content as %s: registered once", f.path, todo[f.cid].path)
        else:
            todo[f.cid] = f
    return done, list(todo.values())


def register_files(
    ol: OpenLedger,
    datanet_id: int,
    files: Sequence[StoredFile],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[list[Registered]]:
    """Approves the bonds of all ``files``, then registers them as the sender by
    ``contributeBatch`` in batches of ``batch_size``, yielding each batch's registrations."""
    if batch_size < 1:
        raise DatanetError(f"batch size {batch_size} is not positive")
    if not files:
        return
    bond = int(read_datanet(ol.protocol, datanet_id).contributionBond)
    if bond:
        ol.ensure_allowance(ol.datanets, bond * len(files))
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        receipt = ol.send(
            f"contributed {len(batch)} file(s) to datanet {datanet_id}",
            ol.datanets.functions.contributeBatch(
                datanet_id, [f.cid for f in batch], [f.size for f in batch]
            ),
        )
        ids = {
            str(e.cid): int(e.contributionId)
            for e in ol.events(receipt, ol.datanets, "Contributed")
        }
        yield [Registered(f.path, f.cid, f.size, ids[f.cid], registered_now=True) for f in batch]
