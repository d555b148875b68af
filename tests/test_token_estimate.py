"""The token estimate a request is charged before the server answers, from the body sent."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_openai_retry._token_estimate import MAX_ESTIMATE, estimate_tokens


def test_chat_messages_count_characters_over_four_plus_the_output_asked_for() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "x" * 40},
            {"role": "user", "content": "y" * 21},
        ],
        "max_tokens": 100,
    }
    assert estimate_tokens(body) == 16 + 100  # 61 characters: 15.25, rounded up


def test_list_of_parts_contents_and_tool_calls_count_their_text() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a" * 40},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": "b" * 40}}],
            },
            {"role": "tool", "content": "c" * 40},
        ],
    }
    assert estimate_tokens(body) == 30


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens", "max_output_tokens"])
def test_the_output_asked_for_counts_once_per_choice(key: str) -> None:
    body = {"messages": [{"role": "user", "content": "abcd"}], key: 50, "n": 3}
    assert estimate_tokens(body) == 1 + 150


def test_completions_prompt_as_text_list_or_token_ids() -> None:
    assert estimate_tokens({"prompt": "z" * 80, "max_tokens": 5}) == 25
    assert estimate_tokens({"prompt": ["z" * 40, "z" * 40]}) == 20
    assert estimate_tokens({"prompt": [1, 2, 3, 4, 5]}) == 5, "token ids count one each"
    assert estimate_tokens({"prompt": [[1, 2], [3]]}) == 3


def test_responses_input_and_instructions() -> None:
    body = {
        "instructions": "i" * 40,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "t" * 40}]},
            {"type": "function_call_output", "call_id": "c1", "output": "o" * 40},
        ],
        "max_output_tokens": 7,
    }
    assert estimate_tokens(body) == 30 + 7
    assert estimate_tokens({"input": "hello world!"}) == 3


def test_embeddings_input_as_strings_or_token_ids() -> None:
    assert estimate_tokens({"input": ["a" * 8, "b" * 8], "model": "text-embedding-3-small"}) == 4
    assert estimate_tokens({"input": [[1, 2, 3], [4, 5]]}) == 5


@pytest.mark.parametrize(
    "body",
    [
        None,
        "a string",
        [1, 2, 3],
        {},
        {"messages": None},
        {"messages": 12},
        {"messages": [None, 3, {"content": 5}, {"content": {"x": 1}}]},
        {"max_tokens": -5},
        {"max_tokens": True, "n": 4},
        {"max_tokens": "100"},
        {"max_tokens": 10.5},
        {"prompt": b"bytes are no prompt"},
    ],
)
def test_odd_bodies_cost_what_they_hold_of_a_prompt(body: object) -> None:
    assert estimate_tokens(body) == 0


def test_hostile_sizes_are_capped() -> None:
    assert estimate_tokens({"max_tokens": 10**100, "n": 10**100}) <= MAX_ESTIMATE
    deep: dict[str, Any] = {"content": "x" * 4}
    for _ in range(10_000):  # far deeper than any message: no recursion error
        deep = {"content": [deep]}
    assert estimate_tokens({"messages": [deep]}) == 0
    cyclic: list[object] = []
    cyclic.append(cyclic)
    assert estimate_tokens({"input": cyclic}) == 0


class Exploding(dict[str, object]):
    def get(self, key: str, default: object = None) -> object:
        raise RuntimeError("a mapping that fails to read")


def test_a_mapping_that_fails_to_read_costs_nothing() -> None:
    assert estimate_tokens(Exploding()) == 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["content", "text", "messages", "input", "prompt", "n", "max_tokens"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@given(body=st.dictionaries(st.sampled_from(["messages", "prompt", "input", "n"]), JSON))
def test_any_json_body_gives_a_count_and_never_raises(body: dict[str, object]) -> None:
    found = estimate_tokens(body)
    assert type(found) is int
    assert 0 <= found <= MAX_ESTIMATE
