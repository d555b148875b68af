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

QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)

# code -> (type, message) for error codes that carry their own type, whatever the status.
_CODES: dict[str, tuple[str, str]] = {
    "insufficient_quota": ("insufficient_quota", QUOTA_MESSAGE),
}


def error_body(
    status: int,
    message: str | None = None,
    param: str | None = None,
    code: str | None = None,
    error_type: str | None = None,
) -> JSON:
    """OpenAI's error envelope, typed so that the SDK picks the matching exception class.

    A code OpenAI gives a type of its own (``insufficient_quota``) brings that type and its
    message, so that a fault written as just that code reads as the real answer does.
    """
    default_code: str | None = None
    if status in _ERRORS:
        default_type, default_code, default_message = _ERRORS[status]
    elif status >= 500:
        default_type = "server_error"
        default_message = "The server had an error while processing your request."
    else:
        default_type, default_message = "invalid_request_error", f"HTTP {status}."
    default_message += " (injected by FakeOpenAIServer)"
    if code in _CODES:
        default_type, default_message = _CODES[code]
    return {
        "error": {
            "message": message or default_message,
            "type": error_type or default_type,
            "param": param,
            "code": default_code if code is None else code,
        }
    }
