"""Reading responses: declared fields and the ones a model does not declare."""

from __future__ import annotations

from openai import BaseModel
from openai.types.chat import ChatCompletion

from otel_openai_retry._operations import OPERATIONS

response_fields = OPERATIONS["/chat/completions"].response_fields


def test_a_chat_completion_is_read_whole() -> None:
    completion = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "hi"},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }
    )
    assert response_fields(completion).attributes() == {
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 4,
    }


def test_fields_a_model_does_not_declare_are_read_too() -> None:
    """``client.post(..., cast_to=Custom)``: the SDK's models keep undeclared fields as extras."""

    class Custom(BaseModel):
        id: str

    parsed = Custom.model_validate(
        {"id": "x-1", "model": "m", "usage": {"input_tokens": 5, "output_tokens": 6}}
    )
    fields = response_fields(parsed)
    assert (fields.response_id, fields.model) == ("x-1", "m")
    # An undeclared nested object stays a dict; its counts are read all the same.
    assert (fields.input_tokens, fields.output_tokens) == (5, 6)
