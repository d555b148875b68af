"""``multipart/form-data`` request bodies, split into their parts byte for byte.

Used twice: by the journal (``RecordedRequest.form``, what a test compares an upload with) and by
the ``/v1/files`` answer (the size of what arrived).
"""

from __future__ import annotations

import email.message
from dataclasses import dataclass

__all__ = ["FormPart", "parse_form"]


@dataclass(frozen=True, repr=False)
class FormPart:
    """One part of a ``multipart/form-data`` request body, its bytes exactly as sent.

    Exact bytes, so that a test can compare an uploaded file byte for byte with what the caller
    passed: a retry that re-sends a half-read or empty stream must show up as a difference.
    """

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def __repr__(self) -> str:
        file = f", filename={self.filename!r}" if self.filename is not None else ""
        return f"FormPart({self.name!r}{file}, {len(self.data)} bytes)"


def parse_form(content_type: str | None, raw: bytes) -> dict[str, FormPart]:
    """The parts of a ``multipart/form-data`` body by field name; ``{}`` for any other body.

    Split on the boundary by hand rather than through ``email``'s parser, which may rewrite line
    endings inside a part: what is returned is byte-exact. A body that is not well formed yields
    the parts read before the damage, never an exception (the server must answer, not crash).
    """
    boundary = _boundary(content_type)
    if boundary is None:
        return {}
    parts: dict[str, FormPart] = {}
    delimiter = b"\r\n--" + boundary
    for section in (b"\r\n" + raw).split(delimiter)[1:]:
        if section.startswith(b"--") or not section.startswith(b"\r\n"):
            break
        head, sep, data = section[2:].partition(b"\r\n\r\n")
        if not sep:
            break
        part = _form_part(head, data)
        if part is not None:
            parts.setdefault(part.name, part)
    return parts


def _boundary(content_type: str | None) -> bytes | None:
    if not content_type:
        return None
    header = email.message.Message()
    header["content-type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        return None
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        return None
    return boundary.encode("latin-1", "replace")


def _form_part(head: bytes, data: bytes) -> FormPart | None:
    header = email.message.Message()
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            header[key.strip()] = value.strip()
    field_name = header.get_param("name", header="content-disposition")
    if not isinstance(field_name, str):
        return None
    filename = header.get_param("filename", header="content-disposition")
    return FormPart(
        name=field_name,
        data=data,
        filename=filename if isinstance(filename, str) else None,
        content_type=header.get("content-type"),
    )
