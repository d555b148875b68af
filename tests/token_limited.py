"""An OpenAI-like server limited by tokens only, as OpenAI's token limit answers: each request is
charged its prompt characters / 4 plus ``max_tokens`` from a token bucket; one that does not fit
gets a 429 whose body says ``type: tokens``. Every answer carries
``x-ratelimit-{limit,remaining,reset}-tokens``, a 429 also ``retry-after-ms``. Real HTTP on
loopback, for the real SDK (until the fake server has a token limit of its own)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TokenLimitedServer:
    def __init__(self, rate: float, capacity: int) -> None:
        self.rate, self.capacity = rate, capacity
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()
        self.reset()
        limited = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                status, headers, body = limited.answer(json.loads(raw or b"{}"))
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {**headers, "content-type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = _Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._http.server_port}/v1"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self._level, self._updated = float(self.capacity), time.monotonic()
            self.statuses.clear()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        chars = sum(len(m.get("content") or "") for m in body.get("messages", []))
        prompt, completion = math.ceil(chars / 4), int(body.get("max_tokens") or 0)
        cost = prompt + completion
        with self._lock:
            now = time.monotonic()
            self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
            self._updated = now
            allowed = self._level >= cost
            if allowed:
                self._level -= cost
            refill_ms = (self.capacity - self._level) / self.rate * 1000
            headers = {
                "x-ratelimit-limit-tokens": str(self.capacity),
                "x-ratelimit-remaining-tokens": str(math.floor(self._level)),
                "x-ratelimit-reset-tokens": f"{refill_ms:.0f}ms",
            }
            status = 200 if allowed else 429
            self.statuses[status] += 1
            if not allowed:
                wait = (cost - self._level) / self.rate
                headers["retry-after-ms"] = str(math.ceil(wait * 1000))
        if not allowed:
            return 429, headers, {"error": _TOKENS_429}
        return 200, headers, _completion(body.get("model", ""), prompt, completion)

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    """A crowd connects at once: the default backlog of 5 would refuse some of it."""


_TOKENS_429 = {
    "message": "Rate limit reached for gpt-4o-mini on tokens per min (TPM). Please try again.",
    "type": "tokens",
    "param": None,
    "code": "rate_limit_exceeded",
}


def _completion(model: str, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-token-limited",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
