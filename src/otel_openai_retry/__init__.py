"""Every OpenAI SDK call through one tenacity retry loop, every attempt visible in OpenTelemetry.

``import otel_openai_retry.auto`` is all most applications need; :class:`OpenAIRetryInstrumentor`
and :class:`RetryPolicy` are for those who configure in code; :func:`set_on_retry_hooks` runs
your own code before every retry's sleep.
"""

from ._decisions import Outcome
from ._errors import ConfigurationError
from ._hooks import RetryDetails, RetryHook, get_on_retry_hooks, set_on_retry_hooks
from ._instrumentor import OpenAIRetryInstrumentor
from ._policy import RetryPolicy
from .version import __version__

__all__ = [
    "ConfigurationError",
    "OpenAIRetryInstrumentor",
    "Outcome",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "__version__",
    "get_on_retry_hooks",
    "set_on_retry_hooks",
]
