"""Reading one file from a multipart body as it streams in, refusing it once it passes a size
limit: nothing beyond ``limit`` bytes is ever read or buffered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

MAX_OTHER_PART_BYTES = 64 * 1024  # form fields besides the file


class UploadError(ValueError):
    """A body that is not a multipart form with the expected file."""


class UploadTooLargeError(UploadError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload is larger than the limit of {limit} bytes")
        self.limit = limit


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    size: int = 0

    @property
    def name(self) -> bytes | None:
        _, options = parse_options_header(self.headers.get(b"content-disposition"))
        return options.get(b"name")


@dataclass(frozen=True)
class UploadedFile:
    data: bytes
    filename: str | None


async def read_file_part(
    content_type: str | None, body: AsyncIterator[bytes], field_name: str, limit: int
) -> UploadedFile:
    """The ``field_name`` file of a ``multipart/form-data`` body of at most ``limit`` bytes."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError("expected a multipart/form-data body with a boundary")
    wanted = field_name.encode()
    data = bytearray()
    parts: list[_Part] = []
    header_field = bytearray()
    header_value = bytearray()
    found: list[_Part] = []

    def on_part_begin() -> None:
        parts.append(_Part())

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        header_field.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        header_value.extend(chunk[start:end])

    def on_header_end() -> None:
        parts[-1].headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        if parts[-1].name == wanted:
            found.append(parts[-1])

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        part = parts[-1]
        part.size += end - start
        if found and part is found[0]:
            if part.size > limit:
                raise UploadTooLargeError(limit)
            data.extend(chunk[start:end])
        elif part.size > MAX_OTHER_PART_BYTES:
            raise UploadError(f"form fields other than {field_name!r} are limited to 64 KiB")

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },  # type: ignore[arg-type]
    )
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as why:
        raise UploadError(f"malformed multipart body: {why}") from None
    if len(found) != 1:
        raise UploadError(f"expected exactly one {field_name!r} file part, got {len(found)}")
    _, options = parse_options_header(found[0].headers.get(b"content-disposition"))
    filename = options.get(b"filename")
    return UploadedFile(bytes(data), filename.decode("utf-8", "replace") if filename else None)
