"""How many tokens OpenAI's limiter charges a request before it answers, from the JSON body sent.

The server cannot know a request's cost before running it, so it charges an estimate: the prompt's
characters / 4, plus the output it may produce (``max_tokens``, ``max_completion_tokens`` or
``max_output_tokens``, times ``n``). Pacing by tokens reserves the same estimate, so that our
schedule and the server's bucket drain alike; the response's usage corrects it afterwards.

Pure and total: any body (hostile, cyclic, nested without end, of odd types) gives a count
``>= 0``, never an exception. Token ids (a prompt or an input given as integers) count one each.
Called only while an endpoint paces tokens: a call that is not paced never pays for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["MAX_ESTIMATE", "estimate_tokens"]

CHARS_PER_TOKEN = 4
MAX_ESTIMATE = 1 << 40
"""No request costs more than this: a hostile ``max_tokens`` must not stall a schedule for ever."""
_MAX_DEPTH = 6
"""Message → content → part → text is four levels; deeper nesting is not a prompt."""
_MAX_ITEMS = 100_000
"""Items read per list: a prompt longer than that is already far over any limit."""
_OUTPUT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_PROMPT_KEYS = ("messages", "prompt", "input", "instructions")
_ID_KEYS = ("prompt", "input")
"""Where a list of integers is a prompt given as token ids."""
_TEXT_KEYS = ("content", "text", "output", "arguments", "tool_calls")
"""Where text sits in a message, a content part, a tool result or a tool call."""


def estimate_tokens(body: object) -> int:
    """The tokens the server charges ``body`` before answering it (0 for what is no request)."""
    if not isinstance(body, Mapping):
        return 0
    try:
        chars, ids = 0, 0
        for key in _PROMPT_KEYS:
            found = _text(body.get(key), 0, key in _ID_KEYS)
            chars += found[0]
            ids += found[1]
        output = _output_tokens(body)
    except Exception:  # a mapping that fails to read costs what was counted: nothing
        return 0
    total = -(-chars // CHARS_PER_TOKEN) + ids + output
    return min(total, MAX_ESTIMATE)


def _count(value: object) -> int | None:
    """A non-negative ``int`` (not a ``bool``), else ``None``."""
    if type(value) is int and value >= 0:
        return value
    return None


def _output_tokens(body: Mapping[str, object]) -> int:
    for key in _OUTPUT_KEYS:
        limit = _count(body.get(key))
        if limit is not None:
            choices = _count(body.get("n"))
            return min(limit, MAX_ESTIMATE) * (1 if not choices else min(choices, 128))
    return 0


def _text(value: object, depth: int, ids: bool = False) -> tuple[int, int]:
    """(characters of text, token ids) in a prompt, a message list, a message or a part;
    integers are token ids only where ``ids`` says a prompt may be given so."""
    if isinstance(value, str):
        return len(value), 0
    if depth >= _MAX_DEPTH:
        return 0, 0
    if isinstance(value, Mapping):
        chars = 0
        for key in _TEXT_KEYS:
            found = value.get(key)
            if found is not None:
                chars += _text(found, depth + 1)[0]
        function = value.get("function")  # a tool call: its arguments are prompt text
        if isinstance(function, Mapping):
            chars += _text(function, depth + 1)[0]
        return chars, 0
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        chars = found_ids = 0
        for index, item in enumerate(value):
            if index >= _MAX_ITEMS:
                break
            if type(item) is int:
                found_ids += ids
                continue
            counted = _text(item, depth + 1, ids)
            chars += counted[0]
            found_ids += counted[1]
        return chars, found_ids
    return 0, 0
