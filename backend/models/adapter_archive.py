"""An adapter as one content-addressed file: a deterministic tar of its PEFT folder.

The archive holds exactly ``adapter_config.json`` and ``adapter_model.safetensors``, in that
(sorted) order, uncompressed, as USTAR entries with mtime 0, uid/gid 0, no owner names and
mode 0644, so the same folder always packs to the same bytes and so to the same CID.
Unpacking accepts nothing else: no other names, no paths, no links, bounded sizes.
ModelFactory packs what it trains; the inference node unpacks what it serves.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from backend.storage.base import ContentStore

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


class AdapterArchiveError(ValueError):
    """Files that are not a well-formed adapter archive; the message says why."""


ARCHIVE_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # sorted
MAX_CONFIG_BYTES = 1 << 20  # bytes
MAX_WEIGHTS_BYTES = 4 << 30  # bytes
_FILE_MODE = 0o644
TAR_OVERHEAD = 16 << 10  # bytes: headers and end-of-archive padding


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
                raise AdapterArchiveError(f"adapter {folder}: missing {name}")
            data = path.read_bytes()
            if len(data) > limits[name]:
                raise AdapterArchiveError(
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
    """The two files of an adapter archive, by name; anything else raises
    :class:`AdapterArchiveError`."""
    limits = _limits(max_weights_bytes)
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if member.name not in limits:
                    raise AdapterArchiveError(
                        f"adapter {source}: unexpected archive entry {member.name!r}, "
                        f"expected only {list(ARCHIVE_FILES)}"
                    )
                if not member.isreg():
                    raise AdapterArchiveError(
                        f"adapter {source}: archive entry {member.name!r} is not a regular file"
                    )
                if member.name in files:
                    raise AdapterArchiveError(
                        f"adapter {source}: duplicate archive entry {member.name!r}"
                    )
                if member.size > limits[member.name]:
                    raise AdapterArchiveError(
                        f"adapter {source}: {member.name} is {member.size} bytes, "
                        f"limit {limits[member.name]}"
                    )
                reader = tar.extractfile(member)
                content = reader.read() if reader is not None else b""
                if len(content) != member.size:
                    raise AdapterArchiveError(
                        f"adapter {source}: archive entry {member.name} truncated"
                    )
                files[member.name] = content
    except (tarfile.TarError, EOFError) as exc:
        raise AdapterArchiveError(f"adapter {source}: not a valid adapter archive: {exc}") from exc
    missing = [name for name in ARCHIVE_FILES if name not in files]
    if missing:
        raise AdapterArchiveError(f"adapter {source}: archive lacks {missing}")
    return files
