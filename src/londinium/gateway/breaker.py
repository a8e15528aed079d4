"""A circuit breaker per backend: stop sending to a backend that keeps failing, try it again later.

    closed     requests pass; `failures` consecutive failures open it
    open       requests skip the backend for `cooldown_s`
    half-open  then one trial request passes: success closes the breaker, failure opens it again

A backend that fails fast (connection refused) would otherwise cost every request an attempt and a
backoff before its fallback; one that is overloaded gets time to recover instead of more load.
"""

from __future__ import annotations

import time
from typing import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic):
        self.failures, self.cooldown_s, self.clock = failures, cooldown_s, clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.trial = False  # a half-open trial request is in flight

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self.opened_at >= self.cooldown_s else OPEN

    def allows(self) -> bool:
        """Whether a request may go to the backend now (without taking the half-open trial)."""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self.trial)

    def acquire(self) -> bool:
        """Take permission for one request: always when closed, once when half-open."""
        if not self.allows():
            return False
        if self.state == HALF_OPEN:
            self.trial = True
        return True

    def success(self) -> None:
        self.consecutive, self.opened_at, self.trial = 0, None, False

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == HALF_OPEN or self.consecutive >= self.failures:
            self.opened_at, self.trial = self.clock(), False

    def release(self) -> None:
        """A request that took permission ended without a verdict (the client went away)."""
        self.trial = False
