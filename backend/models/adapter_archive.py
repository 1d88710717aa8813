"""An adapter as one content-addressed file: a deterministic tar of its PEFT folder.

The archive holds exactly ``adapter_config.json`` and ``adapter_model.safetensors``, in that
(sorted) order, uncompressed, as USTAR entries with mtime 0, uid/gid 0, no owner names and
mode 0644. The config goes in canonical form (:func:`canonical_config`): PEFT writes
``target_modules`` in set order, which changes with Python's hash seed, so two saves of the
same adapter would otherwise be two CIDs. The same adapter always packs to the same bytes and
so to the same CID; the weights file is taken as it is (safetensors writes tensors sorted).
Unpacking accepts nothing else: no other names, no paths, no links, bounded sizes.
ModelFactory packs what it trains and what it imports; the inference node unpacks what it
serves.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

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
# PEFT config lists that are sets (their order means nothing); every other list keeps its order
# (alora_invocation_tokens is a token sequence, layer_replication a list of ranges)
SET_VALUED_KEYS = (
    "target_modules", "exclude_modules", "modules_to_save", "layers_to_transform",
    "target_parameters",
)  # fmt: skip


def _limits(max_weights_bytes: int) -> dict[str, int]:
    return {CONFIG_FILE: MAX_CONFIG_BYTES, WEIGHTS_FILE: max_weights_bytes}


def canonical_config(data: bytes, source: str | Path = "adapter") -> bytes:
    """``adapter_config.json`` in one form per meaning: set-valued lists sorted, keys sorted,
    indented by 2, no trailing newline (the form ModelFactory always saved, so its adapters
    keep their CIDs). Raises :class:`AdapterArchiveError` if ``data`` is not a JSON object."""
    try:
        config = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterArchiveError(f"adapter {source}: {CONFIG_FILE} is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterArchiveError(f"adapter {source}: {CONFIG_FILE} must hold a JSON object")
    for key in SET_VALUED_KEYS:
        if key in config:
            config[key] = _sorted_set(config[key])
    return json.dumps(config, indent=2, sort_keys=True).encode()


def _sorted_set(value: Any) -> Any:
    """A list of only strings or only integers, sorted; anything else as it is (the node
    refuses what it does not serve, with the value as written)."""
    if isinstance(value, list):
        kinds = {bool if isinstance(v, bool) else type(v) for v in value}
        if kinds in ({str}, {int}):
            return sorted(value)
    return value


def pack_adapter(folder: str | Path, max_weights_bytes: int = MAX_WEIGHTS_BYTES) -> bytes:
    """The deterministic archive of the PEFT adapter in ``folder``, its config canonical."""
    folder = Path(folder)
    limits = _limits(max_weights_bytes)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ARCHIVE_FILES:
            path = folder / name
            if not path.is_file():
                raise AdapterArchiveError(f"adapter {folder}: missing {name}")
            data = path.read_bytes()
            if name == CONFIG_FILE and len(data) <= limits[name]:
                data = canonical_config(data, folder)
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
