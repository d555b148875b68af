"""What the assistant answers: text, JSON that matches the caller's schema, or tool calls.

Decided from the request alone, the same way for Chat Completions and the Responses API, as the
real models behave when asked to: a request that offers tools (and does not forbid them) gets a
call to one, with arguments valid for its ``parameters`` schema; the follow-up that carries the
tools' results gets text; a request with a JSON schema as its response format gets an instance of
that schema; anything else gets the usual echo of the last user message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .schema import instance_of
from .shared import InvalidRequestError, new_id, reply_to

__all__ = [
    "Reply",
    "Tool",
    "ToolCall",
    "chat_schema",
    "chat_tools",
    "decide_reply",
    "responses_schema",
    "responses_tools",
]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """JSON text, as the API sends it: the SDK's ``parse()`` decodes it."""


@dataclass(frozen=True)
class Reply:
    text: str | None
    """The message's content; ``None`` when the answer is tool calls."""
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


@dataclass(frozen=True)
class Tool:
    name: str
    parameters: Mapping[str, Any]


def decide_reply(
    *,
    user_text: str,
    tools: Sequence[Tool],
    tool_choice: Any,
    answered: str | None,
    schema: Mapping[str, Any] | None,
    forced: str | None = None,
) -> Reply:
    """``answered``: the latest tool result when the conversation ends with one (a follow-up),
    else ``None``; ``schema``: the JSON schema the answer must match, if any; ``forced``: the
    text to answer whatever the request asks for (a scripted reply)."""
    if forced is not None:
        return Reply(forced)
    if tools and answered is None:
        chosen = _chosen(tools, tool_choice)
        if chosen is not None:
            arguments = _instance(chosen.parameters, f"the parameters of {chosen.name!r}")
            return Reply(None, (ToolCall(new_id("call_"), chosen.name, arguments),))
    if schema is not None:
        return Reply(_instance(schema, "the response format's schema"))
    return Reply(reply_to(answered if answered is not None else user_text))


def _instance(schema: Mapping[str, Any], what: str) -> str:
    """An instance of ``schema`` as JSON text; a schema it cannot follow (a ``$ref`` to
    nowhere) is the caller's 400, as the real API refuses an invalid schema."""
    try:
        return json.dumps(instance_of(schema))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequestError(f"Invalid schema for {what}: {exc!r}") from None


def _chosen(tools: Sequence[Tool], tool_choice: Any) -> Tool | None:
    """The tool to call: the one ``tool_choice`` names, else the first; none for ``"none"``."""
    if tool_choice == "none":
        return None
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else tool_choice.get("name")
        if name is None:  # a choice that names no function (a built-in tool, say)
            return tools[0]
        for tool in tools:
            if tool.name == name:
                return tool
        raise InvalidRequestError(
            f"Invalid value for 'tool_choice': no function named {name!r} was specified in the "
            "'tools' parameter.",
            param="tool_choice",
        )
    return tools[0]


def chat_tools(body: Mapping[str, Any]) -> list[Tool]:
    """The function tools of a Chat Completions request (``{"type": "function", "function":
    {"name", "parameters"}}``)."""
    return _tools(body, nested=True)


def responses_tools(body: Mapping[str, Any]) -> list[Tool]:
    """The function tools of a Responses request (``{"type": "function", "name",
    "parameters"}``); built-in tools (web search, ...) are not called."""
    return _tools(body, nested=False)


def _tools(body: Mapping[str, Any], *, nested: bool) -> list[Tool]:
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequestError("'tools' must be an array", param="tools")
    tools = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or entry.get("type") != "function":
            continue
        function = entry.get("function") if nested else entry
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(
                f"Missing required parameter: 'tools[{index}].function.name'.",
                param=f"tools[{index}].function.name",
            )
        assert isinstance(function, Mapping)
        parameters = function.get("parameters")
        tools.append(Tool(name, parameters if isinstance(parameters, Mapping) else {}))
    return tools


def chat_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON schema of ``response_format``, if it has one.

    JSON mode (``json_object``) has none: its answer is the usual echo, so the JSON a test wants
    back is the JSON it puts in the prompt."""
    return _format(body.get("response_format"), nested=True)


def responses_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The same, from a Responses request's ``text.format``."""
    text = body.get("text")
    return _format(text.get("format") if isinstance(text, Mapping) else None, nested=False)


def _format(spec: Any, *, nested: bool) -> Mapping[str, Any] | None:
    if not isinstance(spec, Mapping) or spec.get("type") != "json_schema":
        return None
    holder = spec.get("json_schema") if nested else spec
    schema = holder.get("schema") if isinstance(holder, Mapping) else None
    if not isinstance(schema, Mapping):
        param = "response_format.json_schema.schema" if nested else "text.format.schema"
        raise InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    return schema
