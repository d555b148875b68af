"""OpenAI's error envelope: for scripted error answers and for requests the server refuses."""

from __future__ import annotations

from .shared import JSON

__all__ = ["error_body"]

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


def error_body(
    status: int,
    message: str | None = None,
    param: str | None = None,
    code: str | None = None,
    kind: str | None = None,
) -> JSON:
    """OpenAI's error envelope, typed so that the SDK picks the matching exception class;
    ``code`` and ``kind`` (its ``type``) replace the status's own."""
    default_code: str | None = None
    if status in _ERRORS:
        error_type, default_code, default_message = _ERRORS[status]
    elif status >= 500:
        error_type = "server_error"
        default_message = "The server had an error while processing your request."
    else:
        error_type, default_message = "invalid_request_error", f"HTTP {status}."
    return {
        "error": {
            "message": message or f"{default_message} (injected by FakeOpenAIServer)",
            "type": error_type if kind is None else kind,
            "param": param,
            "code": default_code if code is None else code,
        }
    }
