"""Response bodies the real ``openai`` SDK parses: JSON objects, SSE event sequences, errors.

Pure functions of the request body, with no I/O, so that the shapes can be read in one place and
checked against the SDK's models. Answers are deterministic (the reply echoes the last user
message, token counts are word counts) so that tests can assert on them; only ids and timestamps
vary, as they do in the real API.
"""

from __future__ import annotations

import base64
import email.message
import hashlib
import json
import random
import re
import struct
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DONE",
    "EMBEDDING_DIMENSIONS",
    "MODELS",
    "FormPart",
    "InvalidRequestError",
    "SSEEvent",
    "chat_completion",
    "chat_completion_events",
    "completion",
    "completion_events",
    "embeddings",
    "error_body",
    "file_object",
    "model",
    "model_list",
    "parse_form",
    "response",
    "response_events",
]

JSON = dict[str, Any]

EMBEDDING_DIMENSIONS = 8
"""Small on purpose: the vectors only have to parse, and tests should stay fast to read."""

MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small")
_MODELS_CREATED = 1_700_000_000
_FALLBACK_REPLY = "Hello from the fake OpenAI server."
_FINGERPRINT = "fp_fake"


class InvalidRequestError(Exception):
    """The request body is unusable; the server answers 400 as the real API would."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event; ``data`` is already serialized (``[DONE]`` is not JSON)."""

    data: str
    event: str | None = None

    def encode(self) -> bytes:
        head = f"event: {self.event}\n" if self.event is not None else ""
        return f"{head}data: {self.data}\n\n".encode()


DONE = SSEEvent("[DONE]")
"""The Chat Completions and Completions stream terminator; the Responses API sends none."""


# -- errors ------------------------------------------------------------------------------------

# status -> (type, code, message), after what api.openai.com sends for each.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "not_found", "The requested resource does not exist."),
    408: ("invalid_request_error", "request_timeout", "Request timed out."),
    409: ("invalid_request_error", "conflict", "The request conflicts with another request."),
    422: ("invalid_request_error", "unprocessable_entity", "The request could not be processed."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
}


def error_body(status: int, message: str | None = None, param: str | None = None) -> JSON:
    """OpenAI's error envelope, typed so that the SDK picks the matching exception class."""
    if status in _ERRORS:
        error_type, code, default_message = _ERRORS[status]
    elif status >= 500:
        error_type, code = "server_error", None
        default_message = "The server had an error while processing your request."
    else:
        error_type, code, default_message = "invalid_request_error", None, f"HTTP {status}."
    return {
        "error": {
            "message": message or f"{default_message} (injected by FakeOpenAIServer)",
            "type": error_type,
            "param": param,
            "code": code,
        }
    }


# -- shared helpers ----------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _words(text: str) -> int:
    return len(text.split())


def _pieces(text: str) -> list[str]:
    """Word-sized deltas that join back to ``text``, like tokens in a real stream."""
    return re.findall(r"\s*\S+", text) or [text]


def _model(body: Mapping[str, Any]) -> str:
    value = body.get("model")
    if not isinstance(value, str) or not value:
        raise InvalidRequestError("you must provide a model parameter", param="model")
    return value


def _choices_count(body: Mapping[str, Any]) -> int:
    n = body.get("n")
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidRequestError(f"{n!r} is less than the minimum of 1 - 'n'", param="n")
    return n


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def _text_of(content: Any) -> str:
    """Text of a message's ``content``: a string, or a list of parts some of which hold text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _reply_to(user_text: str) -> str:
    user_text = " ".join(user_text.split())
    return f"Echo: {user_text}" if user_text else _FALLBACK_REPLY


def _completion_usage(prompt_tokens: int, completion_tokens: int) -> JSON:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# -- chat completions --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chat:
    id: str
    created: int
    model: str
    n: int
    reply: str
    prompt_tokens: int

    @property
    def usage(self) -> JSON:
        return _completion_usage(self.prompt_tokens, self.n * _words(self.reply))

    def chunk(self, choices: list[JSON], *, with_usage_key: bool, usage: JSON | None) -> JSON:
        chunk: JSON = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
        }
        if with_usage_key:
            chunk["usage"] = usage
        return chunk


def _chat(body: Mapping[str, Any]) -> _Chat:
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array", param="messages")
    texts = [_text_of(m.get("content")) for m in messages if isinstance(m, Mapping)]
    user_texts = [
        _text_of(m.get("content"))
        for m in messages
        if isinstance(m, Mapping) and m.get("role") == "user"
    ]
    return _Chat(
        id=_new_id("chatcmpl-"),
        created=int(time.time()),
        model=model,
        n=_choices_count(body),
        reply=_reply_to(user_texts[-1] if user_texts else ""),
        prompt_tokens=max(1, sum(_words(t) for t in texts)),
    )


def chat_completion(body: Mapping[str, Any]) -> JSON:
    chat = _chat(body)
    return {
        "id": chat.id,
        "object": "chat.completion",
        "created": chat.created,
        "model": chat.model,
        "choices": [
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": chat.reply,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
            for index in range(chat.n)
        ],
        "usage": chat.usage,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }


def chat_completion_events(body: Mapping[str, Any]) -> list[SSEEvent]:
    """Role chunk, one chunk per word, the finish chunk, then (if asked) the usage chunk."""
    chat = _chat(body)
    include_usage = _include_usage(body)

    def chunk(choices: list[JSON], usage: JSON | None = None) -> SSEEvent:
        return SSEEvent(json.dumps(chat.chunk(choices, with_usage_key=include_usage, usage=usage)))

    def choice(index: int, delta: JSON, finish_reason: str | None = None) -> JSON:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    indexes = range(chat.n)
    events = [
        chunk([choice(i, {"role": "assistant", "content": "", "refusal": None})]) for i in indexes
    ]
    events.extend(
        chunk([choice(i, {"content": piece})]) for piece in _pieces(chat.reply) for i in indexes
    )
    events.extend(chunk([choice(i, {}, "stop")]) for i in indexes)
    if include_usage:
        events.append(chunk([], usage=chat.usage))
    events.append(DONE)
    return events


# -- completions (legacy) ----------------------------------------------------------------------


def _prompts(body: Mapping[str, Any]) -> list[str]:
    prompt = body.get("prompt", "<|endoftext|>")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) for t in prompt):
            return [" ".join(map(str, prompt))]
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, list) for p in prompt):
            return [" ".join(map(str, p)) for p in prompt]
    raise InvalidRequestError("'prompt' must be a string or an array", param="prompt")


@dataclass(frozen=True)
class _Completion:
    id: str
    created: int
    model: str
    replies: list[str]
    prompt_tokens: int

    @property
    def usage(self) -> JSON:
        return _completion_usage(self.prompt_tokens, sum(_words(r) for r in self.replies))

    def envelope(self, choices: list[JSON], usage: JSON | None) -> JSON:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
            "usage": usage,
        }


def _completion(body: Mapping[str, Any]) -> _Completion:
    model = _model(body)
    prompts = _prompts(body)
    n = _choices_count(body)
    return _Completion(
        id=_new_id("cmpl-"),
        created=int(time.time()),
        model=model,
        # One choice per prompt and per `n`, in that order, as the real endpoint numbers them.
        replies=[_reply_to(p) for p in prompts for _ in range(n)],
        prompt_tokens=max(1, sum(_words(p) for p in prompts)),
    )


def completion(body: Mapping[str, Any]) -> JSON:
    comp = _completion(body)
    choices = [
        {"index": index, "text": reply, "logprobs": None, "finish_reason": "stop"}
        for index, reply in enumerate(comp.replies)
    ]
    return comp.envelope(choices, comp.usage)


def completion_events(body: Mapping[str, Any]) -> list[SSEEvent]:
    comp = _completion(body)
    include_usage = _include_usage(body)

    def chunk(choices: list[JSON], usage: JSON | None = None) -> SSEEvent:
        return SSEEvent(json.dumps(comp.envelope(choices, usage)))

    def choice(index: int, text: str, finish_reason: str | None = None) -> JSON:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}

    events: list[SSEEvent] = []
    for index, reply in enumerate(comp.replies):
        events.extend(chunk([choice(index, piece)]) for piece in _pieces(reply))
        events.append(chunk([choice(index, "", "stop")]))
    if include_usage:
        events.append(chunk([], usage=comp.usage))
    events.append(DONE)
    return events


# -- embeddings --------------------------------------------------------------------------------


def _embedding_inputs(body: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Each input as (seed text, token count); token-id arrays count one token per id."""
    raw = body.get("input")
    if isinstance(raw, str) and raw:
        return [(raw, max(1, _words(raw)))]
    if isinstance(raw, list) and raw:
        if all(isinstance(t, int) for t in raw):
            return [(" ".join(map(str, raw)), len(raw))]
        items: list[tuple[str, int]] = []
        for item in raw:
            if isinstance(item, str) and item:
                items.append((item, max(1, _words(item))))
            elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
                items.append((" ".join(map(str, item)), len(item)))
            else:
                break
        else:
            return items
    raise InvalidRequestError("'input' must be a non-empty string or array", param="input")


def _vector(text: str, dimensions: int) -> list[float]:
    """A unit vector seeded by the text, with float32 values.

    float32 so that the ``float`` and ``base64`` encodings carry exactly the same numbers.
    """
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    values = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def embeddings(body: Mapping[str, Any]) -> JSON:
    """One embedding per input, as floats or as base64 float32 (the SDK asks for base64)."""
    model = _model(body)
    inputs = _embedding_inputs(body)
    dimensions = body.get("dimensions", EMBEDDING_DIMENSIONS)
    if (
        not isinstance(dimensions, int)
        or isinstance(dimensions, bool)
        or not 1 <= dimensions <= 4096
    ):
        raise InvalidRequestError("'dimensions' must be an integer from 1", param="dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequestError(
            f"{encoding!r} is not one of ['float', 'base64'] - 'encoding_format'",
            param="encoding_format",
        )
    data: list[JSON] = []
    for index, (text, _) in enumerate(inputs):
        vector = _vector(text, dimensions)
        embedding: list[float] | str = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(count for _, count in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# -- responses ---------------------------------------------------------------------------------


def _response_texts(body: Mapping[str, Any]) -> tuple[str, int]:
    """(last user text, input token count) of a Responses ``input``."""
    raw = body.get("input")
    instructions = body.get("instructions")
    prompt_words = _words(instructions) if isinstance(instructions, str) else 0
    if isinstance(raw, str):
        return raw, max(1, prompt_words + _words(raw))
    if isinstance(raw, list):
        user_text = ""
        for item in raw:
            if not isinstance(item, Mapping):
                continue
            text = _text_of(item.get("content"))
            prompt_words += _words(text)
            if item.get("role") == "user":
                user_text = text
        return user_text, max(1, prompt_words)
    if raw is None and instructions is not None:
        return "", max(1, prompt_words)
    raise InvalidRequestError("'input' must be a string or an array", param="input")


@dataclass(frozen=True)
class _Response:
    id: str
    message_id: str
    created_at: int
    model: str
    reply: str
    input_tokens: int
    request: Mapping[str, Any]

    def message(self, *, done: bool) -> JSON:
        return {
            "id": self.message_id,
            "type": "message",
            "status": "completed" if done else "in_progress",
            "role": "assistant",
            "content": [self.text_part(done=True)] if done else [],
        }

    def text_part(self, *, done: bool) -> JSON:
        return {
            "type": "output_text",
            "text": self.reply if done else "",
            "annotations": [],
            "logprobs": [],
        }

    @property
    def usage(self) -> JSON:
        output_tokens = _words(self.reply)
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + output_tokens,
        }

    def snapshot(self, *, done: bool) -> JSON:
        """The response object: empty and in progress while streaming, full when completed."""
        req = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "completed" if done else "in_progress",
            "background": False,
            "completed_at": int(time.time()) if done else None,
            "error": None,
            "incomplete_details": None,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.model,
            "output": [self.message(done=True)] if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": req.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": req.get("store", True),
            "temperature": req.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_logprobs": 0,
            "top_p": req.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": self.usage if done else None,
            "user": None,
            "metadata": req.get("metadata") or {},
        }


def _response(body: Mapping[str, Any]) -> _Response:
    model = _model(body)
    user_text, input_tokens = _response_texts(body)
    return _Response(
        id=_new_id("resp_"),
        message_id=_new_id("msg_"),
        created_at=int(time.time()),
        model=model,
        reply=_reply_to(user_text),
        input_tokens=input_tokens,
        request=body,
    )


def response(body: Mapping[str, Any]) -> JSON:
    return _response(body).snapshot(done=True)


def response_events(body: Mapping[str, Any]) -> list[SSEEvent]:
    """The Responses event sequence for one text message, numbered by ``sequence_number``."""
    resp = _response(body)
    where = {"item_id": resp.message_id, "output_index": 0, "content_index": 0}

    def payloads() -> Iterator[JSON]:
        yield {"type": "response.created", "response": resp.snapshot(done=False)}
        yield {"type": "response.in_progress", "response": resp.snapshot(done=False)}
        yield {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": resp.message(done=False),
        }
        yield {
            "type": "response.content_part.added",
            **where,
            "part": resp.text_part(done=False),
        }
        for piece in _pieces(resp.reply):
            yield {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
        yield {"type": "response.output_text.done", **where, "text": resp.reply, "logprobs": []}
        yield {"type": "response.content_part.done", **where, "part": resp.text_part(done=True)}
        yield {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": resp.message(done=True),
        }
        yield {"type": "response.completed", "response": resp.snapshot(done=True)}

    return [
        SSEEvent(json.dumps({**payload, "sequence_number": number}), event=payload["type"])
        for number, payload in enumerate(payloads())
    ]


# -- models ------------------------------------------------------------------------------------


def model(model_id: str) -> JSON:
    return {
        "id": model_id,
        "object": "model",
        "created": _MODELS_CREATED,
        "owned_by": "openai",
    }


def model_list() -> JSON:
    return {"object": "list", "data": [model(model_id) for model_id in MODELS]}


# -- files (multipart uploads) -----------------------------------------------------------------


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
        "id": _new_id("file-"),
        "object": "file",
        "bytes": len(file.data),
        "created_at": int(time.time()),
        "filename": file.filename,
        "purpose": purpose.text,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
