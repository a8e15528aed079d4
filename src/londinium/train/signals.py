"""Ctrl-C and SIGTERM during training: finish the step, save, stop."""

from __future__ import annotations

import signal
from typing import Any


class StopSignal:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the step and stops.
    A second signal interrupts at once (the checkpoint being written, if any, stays atomic)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
