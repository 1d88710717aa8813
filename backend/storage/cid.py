"""CIDs as kubo writes them with ``--cid-version=1 --raw-leaves``: CIDv1, sha2-256, base32.

A CID here is the string form: multibase prefix ``b`` + lowercase RFC 4648 base32 (no padding)
of ``<version=1><codec><multihash>``; the codec is ``raw`` (0x55) for a file of at most one
chunk and ``dag-pb`` (0x70) for the root of a larger file.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
_CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb"}


class InvalidCIDError(ValueError):
    """A string that is not a CID this store can verify."""


def varint(n: int) -> bytes:
    """Unsigned LEB128, as multiformats and protobuf use."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise InvalidCIDError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


@dataclass(frozen=True)
class CID:
    """A parsed CIDv1 with a sha2-256 multihash."""

    codec: int
    digest: bytes  # 32 bytes

    def to_bytes(self) -> bytes:
        return varint(1) + varint(self.codec) + bytes([SHA2_256, 32]) + self.digest

    def __str__(self) -> str:
        return "b" + base64.b32encode(self.to_bytes()).decode().lower().rstrip("=")

    @classmethod
    def parse(cls, text: str) -> CID:
        """Parses a base32 CIDv1 (sha2-256, raw or dag-pb); raises :class:`InvalidCIDError`."""
        if not isinstance(text, str) or not text.startswith("b") or len(text) < 10:
            raise InvalidCIDError(f"not a base32 CIDv1: {text!r}")
        body = text[1:].upper()
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError as why:
            raise InvalidCIDError(f"not a base32 CIDv1: {text!r} ({why})") from None
        version, pos = _read_varint(raw, 0)
        codec, pos = _read_varint(raw, pos)
        if version != 1:
            raise InvalidCIDError(f"CID version {version} in {text!r}: only CIDv1 is supported")
        if codec not in _CODEC_NAMES:
            raise InvalidCIDError(f"codec {codec:#x} in {text!r}: only raw and dag-pb files")
        if raw[pos : pos + 2] != bytes([SHA2_256, 32]) or len(raw) != pos + 34:
            raise InvalidCIDError(f"{text!r} is not a sha2-256 CID")
        cid = cls(codec, raw[pos + 2 :])
        # One CID, one spelling: an upper-case body, set padding bits or "=" padding decode to
        # the same bytes, but a store keyed by the string would say it has one spelling and
        # then find its bytes hash to another.
        if str(cid) != text:
            raise InvalidCIDError(
                f"{text!r} is not the canonical spelling of {cid} "
                "(lower-case base32, no padding, zero padding bits)"
            )
        return cid
