"""Whether a request body can be sent again, and rewinding it before each retry.

Each of our attempts runs the SDK with its own retries off, so the SDK never gets to refuse a
retry whose body it cannot replay: a read-once upload (a pipe, a socket, a streamed download)
would go out again with an empty file part and the call would report success. The rules are the
SDK's own (``openai._base_client._RequestBodyReplay``, which older SDKs lack): bytes and
lists/tuples replay; a file object replays only when it is seekable, rewound to where it stood
before the first attempt; anything else (an iterator, a generator, a non-seekable stream) does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["BodyReplay", "capture_body"]


class BodyReplay:
    """The positions of one request's seekable body parts, taken before the first attempt."""

    __slots__ = ("_positions", "replayable")

    def __init__(self, positions: list[tuple[Any, int]], replayable: bool) -> None:
        self._positions = positions
        self.replayable = replayable

    def rewind(self) -> bool:
        """Put every part back where it was; ``False`` when the body cannot be sent again."""
        if not self.replayable:
            return False
        for content, position in self._positions:
            try:
                content.seek(position)
            except (OSError, ValueError):
                self.replayable = False
                return False
        return True


def capture_body(content: object, files: object) -> BodyReplay | None:
    """``None`` for the common case of a body that is plain data (JSON, bytes, no files)."""
    if (content is None or isinstance(content, (bytes, bytearray))) and files is None:
        return None
    positions: list[tuple[Any, int]] = []
    replayable = all(_capture(part, positions) for part in (content, *_file_contents(files)))
    return BodyReplay(positions, replayable)


def _capture(content: object, positions: list[tuple[Any, int]]) -> bool:
    if content is None or isinstance(content, (bytes, bytearray, str)):
        return True
    if not callable(getattr(content, "read", None)):
        # An iterable may hand out the same exhausted iterator twice; trust only containers.
        return type(content) in (list, tuple)
    seekable = getattr(content, "seekable", None)
    tell = getattr(content, "tell", None)
    if not callable(seekable) or not callable(tell) or not callable(getattr(content, "seek", None)):
        return False
    try:
        if not seekable():
            return False
        position = tell()
    except (OSError, ValueError):
        return False
    if not isinstance(position, int):
        return False
    positions.append((content, position))
    return True


def _file_contents(files: object) -> Iterator[object]:
    """The content of each file entry, in the shapes httpx accepts (mapping or pairs)."""
    if files is None:
        return
    entries: Any = files.items() if isinstance(files, Mapping) else files
    if not isinstance(entries, Iterable):
        yield _UNKNOWN
        return
    for entry in entries:
        if not (isinstance(entry, tuple) and len(entry) == 2):
            yield _UNKNOWN  # a shape httpx would not take either: never replayed
            continue
        file = entry[1]
        if isinstance(file, tuple):
            if len(file) > 1:
                yield file[1]
        else:
            yield file


_UNKNOWN = object()
"""A part whose content cannot be found: it counts as one that cannot be sent again."""
