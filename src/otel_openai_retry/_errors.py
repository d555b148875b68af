"""The library's own exceptions.

::

    ValueError
    └── ConfigurationError   a bad policy value or environment variable

The caller of an OpenAI method never sees an exception of ours: a failed call raises the
SDK's own exception (``openai.RateLimitError``, ...), never a tenacity ``RetryError``.
"""

from __future__ import annotations

__all__ = ["ConfigurationError"]


class ConfigurationError(ValueError):
    """A setting is invalid; the message names the variable, the value and what is accepted."""
