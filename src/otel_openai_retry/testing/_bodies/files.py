"""``POST /v1/files``: the file object of a multipart upload, its size as received."""

from __future__ import annotations

import time
from collections.abc import Mapping

from .._form import FormPart
from .shared import JSON, InvalidRequestError, new_id

__all__ = ["file_object"]


def file_object(form: Mapping[str, FormPart]) -> JSON:
    """``POST /v1/files``: the ``FileObject`` of the uploaded ``file`` part.

    ``bytes`` is the size actually received, so a caller (or a test) can see at once that an
    upload arrived short.
    """
    file = form.get("file")
    if file is None or file.filename is None:
        raise InvalidRequestError("Missing required parameter: 'file'.", "file")
    purpose = form.get("purpose")
    if purpose is None or not purpose.text:
        raise InvalidRequestError("Missing required parameter: 'purpose'.", "purpose")
    return {
        "id": new_id("file-"),
        "object": "file",
        "bytes": len(file.data),
        "created_at": int(time.time()),
        "filename": file.filename,
        "purpose": purpose.text,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
