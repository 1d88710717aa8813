"""An adapter as one content-addressed file: a deterministic tar of its PEFT folder.

The archive holds exactly ``adapter_config.json`` and ``adapter_model.safetensors``, in that
(sorted) order, uncompressed, as USTAR entries with mtime 0, uid/gid 0, no owner names and
mode 0644, so the same folder always packs to the same bytes and so to the same CID.
Unpacking accepts nothing else: no other names, no paths, no links, bounded sizes.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from backend.storage.base import CIDMismatchError, ContentStore, ContentTooLargeError
from backend.storage.cid import CID, InvalidCIDError
from inference_node.engine.adapters import CONFIG_FILE, WEIGHTS_FILE, AdapterError

log = logging.getLogger(__name__)

ARCHIVE_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # sorted
MAX_CONFIG_BYTES = 1 << 20  # bytes
MAX_WEIGHTS_BYTES = 4 << 30  # bytes
_FILE_MODE = 0o644
_TAR_OVERHEAD = 16 << 10  # bytes: headers and end-of-archive padding


def _limits(max_weights_bytes: int) -> dict[str, int]:
    return {CONFIG_FILE: MAX_CONFIG_BYTES, WEIGHTS_FILE: max_weights_bytes}


def pack_adapter(folder: str | Path, max_weights_bytes: int = MAX_WEIGHTS_BYTES) -> bytes:
    """The deterministic archive of the PEFT adapter in ``folder``."""
    folder = Path(folder)
    limits = _limits(max_weights_bytes)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ARCHIVE_FILES:
            path = folder / name
            if not path.is_file():
                raise AdapterError(f"adapter {folder}: missing {name}")
            data = path.read_bytes()
            if len(data) > limits[name]:
                raise AdapterError(
                    f"adapter {folder}: {name} is {len(data)} bytes, limit {limits[name]}"
                )
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = _FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def put_adapter(store: ContentStore, folder: str | Path) -> str:
    """Stores the archive of ``folder`` and returns its CID."""
    return store.put(pack_adapter(folder))


def unpack_adapter(
    data: bytes, max_weights_bytes: int = MAX_WEIGHTS_BYTES, source: str = "archive"
) -> dict[str, bytes]:
    """The two files of an adapter archive, by name; anything else is an :class:`AdapterError`."""
    limits = _limits(max_weights_bytes)
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if member.name not in limits:
                    raise AdapterError(
                        f"adapter {source}: unexpected archive entry {member.name!r}, "
                        f"expected only {list(ARCHIVE_FILES)}"
                    )
                if not member.isreg():
                    raise AdapterError(
                        f"adapter {source}: archive entry {member.name!r} is not a regular file"
                    )
                if member.name in files:
                    raise AdapterError(f"adapter {source}: duplicate archive entry {member.name!r}")
                if member.size > limits[member.name]:
                    raise AdapterError(
                        f"adapter {source}: {member.name} is {member.size} bytes, "
                        f"limit {limits[member.name]}"
                    )
                reader = tar.extractfile(member)
                content = reader.read() if reader is not None else b""
                if len(content) != member.size:
                    raise AdapterError(f"adapter {source}: archive entry {member.name} truncated")
                files[member.name] = content
    except (tarfile.TarError, EOFError) as exc:
        raise AdapterError(f"adapter {source}: not a valid adapter archive: {exc}") from exc
    missing = [name for name in ARCHIVE_FILES if name not in files]
    if missing:
        raise AdapterError(f"adapter {source}: archive lacks {missing}")
    return files


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
