"""Every OpenAI SDK call through one tenacity retry loop, every attempt visible in OpenTelemetry.

``import otel_openai_retry.auto`` is all most applications need; :class:`OpenAIRetryInstrumentor`
and :class:`RetryPolicy` are for those who configure in code.
"""

from ._decisions import Outcome
from ._errors import ConfigurationError
from ._instrumentor import OpenAIRetryInstrumentor
from ._loop import RetryDetails
from ._policy import RetryPolicy
from .version import __version__

__all__ = [
    "ConfigurationError",
    "OpenAIRetryInstrumentor",
    "Outcome",
    "RetryDetails",
    "RetryPolicy",
    "__version__",
]
