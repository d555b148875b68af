"""Response bodies the real ``openai`` SDK parses: JSON objects, SSE event sequences, errors.

Pure functions of the request body, with no I/O, so that the shapes can be read in one place per
API operation family and checked against the SDK's models. Answers are deterministic (the reply
echoes the last user message, token counts are word counts) so that tests can assert on them; only
ids and timestamps vary, as they do in the real API.
"""

from .chat import chat_completion, chat_completion_events
from .completions import completion, completion_events
from .embeddings import EMBEDDING_DIMENSIONS, embeddings
from .errors import error_body
from .files import file_object
from .models import MODELS, model, model_list
from .responses import response, response_events
from .shared import DONE, JSON, InvalidRequestError, SSEEvent

__all__ = [
    "DONE",
    "EMBEDDING_DIMENSIONS",
    "JSON",
    "MODELS",
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
    "response",
    "response_events",
]
