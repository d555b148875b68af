"""Seeded probabilistic chaos: each request draws its fault, and a seed replays the same draws.

For soak and resilience runs that want a realistic mix of failures rather than a script: a few
429s, a few 500s and 503s, the odd dropped connection, stalled answer or cut stream. Draws are
made in arrival order from one ``random.Random(seed)``, so the n-th request gets the same fault on
every run with the same seed (:meth:`Chaos.sequence` shows it in advance): a failure found once
can be replayed.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from ._faults import Fault

__all__ = ["CHAOS_HELP", "Chaos", "chaos_to_json", "parse_chaos"]

CHAOS_HELP = """\
--chaos: comma-separated NAME=VALUE: seed=INT, and per-request probabilities 429, 500, 503,
  drop (no answer), stall (answer after stall-s seconds, default 30), cut (a stream cut after
  1-3 events, a body halfway); retry-after-ms=N for the 429s (default 100).
  example: --chaos seed=1,429=0.1,500=0.05,drop=0.02"""

_NAMES = {
    "seed": "seed",
    "429": "rate_429",
    "500": "rate_500",
    "503": "rate_503",
    "drop": "drop",
    "stall": "stall",
    "cut": "cut",
    "stall-s": "stall_s",
    "retry-after-ms": "retry_after_ms",
}


@dataclass(frozen=True)
class Chaos:
    """Per-request probabilities of each fault; their sum must not exceed 1.

    Attributes:
        seed: Seeds the draws; ``None`` draws differently each time the mode is set.
        rate_429: A 429 with ``retry-after-ms: retry_after_ms``.
        rate_500: A 500.
        rate_503: A 503.
        drop: The connection closed without an answer.
        stall: An answer only after ``stall_s`` seconds (past most clients' read timeout).
        cut: A streamed answer cut after 1 to 3 events (a JSON body cut halfway).
    """

    seed: int | None = None
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    drop: float = 0.0
    stall: float = 0.0
    cut: float = 0.0
    stall_s: float = 30.0
    retry_after_ms: int = 100

    def __post_init__(self) -> None:
        rates = self._rates()
        for name, rate in rates:
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"chaos {name} must be a probability in [0, 1], got {rate}")
        if sum(rate for _, rate in rates) > 1.0 + 1e-9:
            raise ValueError("chaos probabilities add up to more than 1")
        if not self.stall_s >= 0 or self.retry_after_ms < 0:
            raise ValueError("chaos stall_s and retry_after_ms must be >= 0")

    def _rates(self) -> list[tuple[str, float]]:
        names = ("rate_429", "rate_500", "rate_503", "drop", "stall", "cut")
        return [(name, float(getattr(self, name))) for name in names]

    def draw(self, rng: random.Random) -> Fault | None:
        """The next request's fault, or ``None`` for one that chaos leaves alone."""
        roll = rng.random()
        for name, rate in self._rates():
            if roll < rate:
                return self._fault(name, rng)
            roll -= rate
        return None

    def _fault(self, name: str, rng: random.Random) -> Fault:
        if name == "rate_429":
            return Fault(429, headers=(("retry-after-ms", str(self.retry_after_ms)),))
        if name in ("rate_500", "rate_503"):
            return Fault(int(name[-3:]))
        if name == "drop":
            return Fault.drop()
        if name == "stall":
            return Fault.delay(self.stall_s)
        return Fault.stream_break(rng.randint(1, 3))

    def sequence(self, requests: int) -> list[Fault]:
        """The faults the first ``requests`` requests get (:meth:`Fault.ok` where none)."""
        rng = random.Random(self.seed)
        return [self.draw(rng) or Fault.ok() for _ in range(requests)]


def parse_chaos(text: str) -> Chaos:
    """``seed=1,429=0.1,500=0.05,drop=0.02`` as a :class:`Chaos`; ``ValueError`` naming what
    it could not read."""
    values: dict[str, float | int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        field = _NAMES.get(name.strip().lower())
        if field is None or not sep:
            raise ValueError(f"bad chaos item {item!r} (names: {', '.join(_NAMES)})")
        try:
            values[field] = int(value) if field in ("seed", "retry_after_ms") else float(value)
        except ValueError:
            raise ValueError(f"bad chaos item {item!r}: {value!r} is not a number") from None
    return Chaos(**values)  # type: ignore[arg-type]


def chaos_to_json(chaos: Chaos) -> dict[str, float | int | None]:
    """What the control API's ``"chaos"`` condition takes: the fields by name."""
    return dataclasses.asdict(chaos)
