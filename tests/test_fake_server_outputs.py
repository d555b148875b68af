"""The fake server answers structured output and tool calls as the real API does: what the SDK's
``parse()`` helpers need, sync and async, over real HTTP."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Literal

import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from pydantic import BaseModel, Field

from otel_openai_retry.testing import FakeOpenAIServer, Fault
from otel_openai_retry.testing._bodies.schema import instance_of

from .helpers import Sdk

MODEL = "gpt-4o-mini"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "weather in Paris?"}]


class Colour(str, Enum):
    RED = "red"
    BLUE = "blue"


class Place(BaseModel):
    city: str
    lat: float
    population: int


class Forecast(BaseModel):
    """Every kind of schema the generator must fill: nested models ($ref/$defs), arrays with a
    minimum, enums, literals, nullable fields, bounds."""

    place: Place
    days: list[int] = Field(min_length=2)
    colour: Colour
    unit: Literal["C", "F"]
    note: str | None
    rainy: bool
    temperature: float = Field(ge=-50, le=60)
    code: str = Field(min_length=3)
    history: list[Place]


class GetWeather(BaseModel):
    city: str
    days: int = Field(ge=1)


def _tool(name: str, parameters: dict[str, Any]) -> Any:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


async def test_chat_parse_returns_an_instance_of_the_model(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    client = sdk.client(server, max_retries=0)
    completion = await sdk(
        lambda: client.chat.completions.parse(model=MODEL, messages=USER, response_format=Forecast)
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Forecast)
    assert len(parsed.days) == 2 and parsed.unit == "C" and len(parsed.code) == 3
    sent = server.requests[0].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Forecast"


async def test_a_json_schema_response_format_gets_json_matching_it(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "score": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 3}]},
        },
        "required": ["tags", "score"],
        "additionalProperties": False,
    }
    client = sdk.client(server, max_retries=0)
    completion = await sdk(
        lambda: client.chat.completions.create(
            model=MODEL,
            messages=USER,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "tagged", "schema": schema, "strict": True},
            },
        )
    )
    assert json.loads(completion.choices[0].message.content or "") == {"tags": [""], "score": 3}


async def test_a_streamed_structured_answer_parses_when_joined(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    client = sdk.client(server, max_retries=0)
    chunks: list[ChatCompletionChunk] = await sdk.drain(
        lambda: client.chat.completions.create(
            model=MODEL,
            messages=USER,
            stream=True,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "Forecast", "schema": Forecast.model_json_schema()},
            },
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3
    assert isinstance(Forecast.model_validate_json(content), Forecast)


def test_responses_parse_returns_an_instance_of_the_model(server: FakeOpenAIServer) -> None:
    with openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as client:
        response = client.responses.parse(model=MODEL, input="weather?", text_format=Forecast)
    assert isinstance(response.output_parsed, Forecast)
    assert server.requests[0].body["text"]["format"]["type"] == "json_schema"


async def test_responses_parse_async(server: FakeOpenAIServer) -> None:
    async with openai.AsyncOpenAI(
        api_key="sk-test", base_url=server.base_url, max_retries=0
    ) as client:
        response = await client.responses.parse(model=MODEL, input="weather?", text_format=Place)
    assert isinstance(response.output_parsed, Place)


async def test_a_scripted_reply_overrides_the_schema(server: FakeOpenAIServer, sdk: Sdk) -> None:
    """What a model outside strict mode may do: text that fails the caller's model."""
    server.script(Fault.replying("not json"), Fault.replying('{"city": "Oslo"}'))
    client = sdk.client(server, max_retries=0)
    with pytest.raises(pydantic.ValidationError):
        await sdk(
            lambda: client.chat.completions.parse(model=MODEL, messages=USER, response_format=Place)
        )
    tools = [openai.pydantic_function_tool(GetWeather)]
    streamed: list[ChatCompletionChunk] = await sdk.drain(
        lambda: client.chat.completions.create(model=MODEL, messages=USER, tools=tools, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        '{"city": "Oslo"}'
    )
    assert repr(server.requests[0].fault) == "Fault(200, reply 'not json')"


# -- tool calls ---------------------------------------------------------------------------------


async def test_tools_get_a_call_with_arguments_valid_for_the_schema(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    client = sdk.client(server, max_retries=0)
    completion = await sdk(
        lambda: client.chat.completions.parse(
            model=MODEL, messages=USER, tools=[openai.pydantic_function_tool(GetWeather)]
        )
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "GetWeather"
    assert call.function.parsed_arguments == GetWeather(city="", days=1)


async def test_tool_choice_names_the_tool_and_none_forbids_calls(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    client = sdk.client(server, max_retries=0)
    tools = [_tool("first", {"type": "object"}), _tool("second", GetWeather.model_json_schema())]
    named = await sdk(
        lambda: client.chat.completions.create(
            model=MODEL,
            messages=USER,
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "second"}},
        )
    )
    (call,) = named.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "second",
        {"city": "", "days": 1},
    )
    none = await sdk(
        lambda: client.chat.completions.create(
            model=MODEL, messages=USER, tools=tools, tool_choice="none"
        )
    )
    assert none.choices[0].finish_reason == "stop"
    assert none.choices[0].message.content == "Echo: weather in Paris?"
    with pytest.raises(openai.BadRequestError, match="no function named 'third'"):
        await sdk(
            lambda: client.chat.completions.create(
                model=MODEL,
                messages=USER,
                tools=tools,
                tool_choice={"type": "function", "function": {"name": "third"}},
            )
        )


async def test_a_tool_result_gets_a_text_answer(server: FakeOpenAIServer, sdk: Sdk) -> None:
    client = sdk.client(server, max_retries=0)
    tools = [openai.pydantic_function_tool(GetWeather)]
    first = await sdk(
        lambda: client.chat.completions.create(model=MODEL, messages=USER, tools=tools)
    )
    (call,) = first.choices[0].message.tool_calls or []
    follow_up: list[ChatCompletionMessageParam] = [
        *USER,
        first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    second = await sdk(
        lambda: client.chat.completions.create(model=MODEL, messages=follow_up, tools=tools)
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Echo: sunny, 21 C"
    assert server.requests[1].body["messages"][2]["tool_call_id"] == call.id


async def test_a_streamed_tool_call_comes_in_deltas_the_sdk_assembles(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    client = sdk.client(server, max_retries=0)
    tools = [openai.pydantic_function_tool(GetWeather)]
    chunks: list[ChatCompletionChunk] = await sdk.drain(
        lambda: client.chat.completions.create(model=MODEL, messages=USER, tools=tools, stream=True)
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    first_call = (deltas[0].tool_calls or [])[0]
    assert first_call.id and first_call.function and first_call.function.name == "GetWeather"
    pieces = [
        (call.function.arguments or "")
        for delta in deltas[1:]
        for call in delta.tool_calls or []
        if call.function
    ]
    assert len(pieces) > 1
    assert json.loads("".join(pieces)) == {"city": "", "days": 1}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_stream_helper_parses_a_streamed_tool_call(server: FakeOpenAIServer) -> None:
    tools = [openai.pydantic_function_tool(GetWeather)]
    with (
        openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as client,
        client.chat.completions.stream(model=MODEL, messages=USER, tools=tools) as stream,
    ):
        for _ in stream:
            pass
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == GetWeather(city="", days=1)


async def test_responses_function_calls_plain_and_streamed(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    client = sdk.client(server, max_retries=0)
    tools: Any = [
        {"type": "function", "name": "lookup", "parameters": GetWeather.model_json_schema()}
    ]
    response = await sdk(lambda: client.responses.create(model=MODEL, input="hi", tools=tools))
    (item,) = response.output
    assert item.type == "function_call"
    assert (item.name, json.loads(item.arguments)) == ("lookup", {"city": "", "days": 1})
    events = await sdk.drain(
        lambda: client.responses.create(model=MODEL, input="hi", tools=tools, stream=True)
    )
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert json.loads("".join(deltas)) == {"city": "", "days": 1}
    follow_up: Any = [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": item.call_id, "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": item.call_id, "output": "42"},
    ]
    answer = await sdk(lambda: client.responses.create(model=MODEL, input=follow_up, tools=tools))
    assert answer.output_text == "Echo: 42"


async def test_a_schema_it_cannot_follow_is_a_400(server: FakeOpenAIServer, sdk: Sdk) -> None:
    client = sdk.client(server, max_retries=0)
    with pytest.raises(
        openai.BadRequestError, match="Invalid schema for the parameters of 'broken'"
    ):
        await sdk(
            lambda: client.chat.completions.create(
                model=MODEL, messages=USER, tools=[_tool("broken", {"$ref": "#/$defs/Gone"})]
            )
        )


# -- the schema generator -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string", "format": "date-time"}, "2024-01-01T00:00:00Z"),
        ({"type": ["null", "integer"], "exclusiveMinimum": 4}, 5),
        ({"type": "number", "maximum": -2.5}, -2.5),
        ({"type": "integer", "minimum": 1, "multipleOf": 5}, 5),
        ({"enum": ["b", "a"]}, "b"),
        ({"const": 7}, 7),
        ({"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "null"}]}, [True, None]),
        ({"allOf": [{"$ref": "#/$defs/A"}], "$defs": {"A": {"type": "string"}}}, ""),
        (
            {
                "$ref": "#/$defs/Node",
                "$defs": {
                    "Node": {
                        "type": "object",
                        "properties": {
                            "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}
                        },
                        "required": ["next"],
                    }
                },
            },
            None,  # recursive: checked below for termination only
        ),
    ],
)
def test_instance_of(schema: dict[str, Any], expected: Any) -> None:
    value = instance_of(schema)
    if expected is not None:
        assert value == expected
    else:
        assert isinstance(value, dict) and "next" in value
