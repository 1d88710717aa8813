"""Adapters by CID for the node: the archive format (``backend.models.adapter_archive``) with
its errors as :class:`AdapterError`, verified fetches from the content store, and the
unpacked disk cache."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from backend.models import adapter_archive as archive
from backend.models.adapter_archive import AdapterArchiveError
from backend.storage.base import CIDMismatchError, ContentStore, ContentTooLargeError
from backend.storage.cid import CID, InvalidCIDError
from inference_node.engine.adapters import AdapterError

log = logging.getLogger(__name__)

ARCHIVE_FILES = archive.ARCHIVE_FILES
MAX_CONFIG_BYTES = archive.MAX_CONFIG_BYTES
MAX_WEIGHTS_BYTES = archive.MAX_WEIGHTS_BYTES
_TAR_OVERHEAD = archive.TAR_OVERHEAD


def pack_adapter(folder: str | Path, max_weights_bytes: int = MAX_WEIGHTS_BYTES) -> bytes:
    """The deterministic archive of the PEFT adapter in ``folder``."""
    try:
        return archive.pack_adapter(folder, max_weights_bytes)
    except AdapterArchiveError as exc:
        raise AdapterError(str(exc)) from exc


def put_adapter(store: ContentStore, folder: str | Path) -> str:
    """Stores the archive of ``folder`` and returns its CID."""
    return store.put(pack_adapter(folder))


def unpack_adapter(
    data: bytes, max_weights_bytes: int = MAX_WEIGHTS_BYTES, source: str = "archive"
) -> dict[str, bytes]:
    """The two files of an adapter archive, by name; anything else is an :class:`AdapterError`."""
    try:
        return archive.unpack_adapter(data, max_weights_bytes, source)
    except AdapterArchiveError as exc:
        raise AdapterError(str(exc)) from exc


def _read_verified(store: ContentStore, cid: str, limit: int) -> bytes:
    try:
        return store.get(cid, max_bytes=limit)
    except ContentTooLargeError as exc:
        raise AdapterError(f"adapter {cid}: archive exceeds {limit} bytes") from exc
    except CIDMismatchError as exc:
        raise AdapterError(f"adapter {cid}: content failed verification: {exc}") from exc


def _parse_cid(cid: str) -> str:
    try:
        return str(CID.parse(cid))
    except InvalidCIDError as exc:
        raise AdapterError(f"adapter {cid!r}: {exc}") from exc


def adapter_cache_path(cache_dir: str | Path, cid: str) -> Path:
    """Where ``fetch_adapter`` keeps the unpacked adapter of ``cid``."""
    return Path(cache_dir) / _parse_cid(cid)


def fetch_adapter_files(
    store: ContentStore, cid: str, max_weights_bytes: int = MAX_WEIGHTS_BYTES
) -> dict[str, bytes]:
    """The two files of the adapter archive ``cid``, read from ``store`` and verified.

    Raises :class:`AdapterError` for content that fails verification or is not an adapter
    archive; a missing CID raises the store's error.
    """
    cid = _parse_cid(cid)
    limit = MAX_CONFIG_BYTES + max_weights_bytes + _TAR_OVERHEAD
    return unpack_adapter(_read_verified(store, cid, limit), max_weights_bytes, source=cid)


def cache_adapter_files(cache_dir: str | Path, cid: str, files: dict[str, bytes]) -> Path:
    """Writes an adapter's files into its cache folder, which appears only complete
    (written aside, then renamed into place); an existing folder is kept as is."""
    final = adapter_cache_path(cache_dir, cid)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=".incoming-"))
    try:
        for name, content in files.items():
            (staging / name).write_bytes(content)
        try:
            os.replace(staging, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.debug("cached adapter %s in %s", cid, final)
    return final


def fetch_adapter(
    store: ContentStore,
    cid: str,
    cache_dir: str | Path,
    max_weights_bytes: int = MAX_WEIGHTS_BYTES,
) -> Path:
    """The adapter folder of ``cid`` in ``cache_dir``, fetched verified and unpacked if absent."""
    final = adapter_cache_path(cache_dir, cid)
    if final.is_dir():
        return final
    return cache_adapter_files(cache_dir, cid, fetch_adapter_files(store, cid, max_weights_bytes))
