"""Progress that suits where it is shown: a tqdm bar on a terminal, plain lines in a log.

A tqdm bar redraws itself with carriage returns and cursor movements (`ESC[A`), which is right on a
terminal and garbage in a redirected log, a CI job or a file that cron writes. `progress(...)` takes
tqdm's arguments and returns tqdm's bar when stderr is a terminal; otherwise a `ProgressLines` with
the same methods (`update`, `close`, iteration, `with`) that writes one plain line at most every
`every_s` seconds (what, how many of how many, the rate and the time left) and a last line when it
closes, if it wrote any: a job that takes less than `every_s` writes nothing. `train` shows its
progress the same way (`train/monitor.py`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

EVERY_S = 30.0  # seconds between two plain lines: a long stage leaves a few lines a minute in a log


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (stderr by default) is a terminal, where bars belong."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def say(message: str) -> None:
    """Print a line to stdout without breaking a bar that is being drawn on the terminal."""
    if on_terminal():
        from tqdm import tqdm

        tqdm.write(message)
    else:
        print(message, flush=True)


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
             unit_scale: bool = False, disable: bool | None = False, leave: bool = True,
             every_s: float = EVERY_S, file: TextIO | None = None) -> Any:
    """A progress bar over `iterable` (or updated by hand up to `total`); see the module docstring.
    `disable=True` shows nothing (None, as in tqdm, means the same as False here: lines off a terminal)."""
    file = sys.stderr if file is None else file
    if disable is True or not on_terminal(file):
        return ProgressLines(iterable, total, desc, unit, unit_scale, every_s, file, quiet=disable is True)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=leave, file=file, dynamic_ncols=True)


class ProgressLines:
    """tqdm's interface, written as a plain line every `every_s` seconds; never a CR or an escape."""

    def __init__(self, iterable: Iterable | None, total: float | None, desc: str, unit: str, unit_scale: bool,
                 every_s: float, file: TextIO, quiet: bool = False):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.unit_scale = total, desc.strip(), unit, unit_scale
        self.every_s, self.file, self.quiet = every_s, file, quiet
        self.n = 0
        self._start = self._last = time.monotonic()
        self._wrote = self._closed = False

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("progress(): nothing to iterate over (give an iterable, or call update)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s and (self.total is None or self.n < self.total):  # the last line is close's
            self._last = now
            self._line(now)

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """tqdm's extra fields: left out of the plain lines."""

    def write(self, message: str) -> None:
        print(message, file=self.file, flush=True)

    def close(self) -> None:
        if not self._closed and self._wrote:
            self._line(time.monotonic(), done=True)
        self._closed = True

    def _amount(self, x: float) -> str:
        from tqdm import tqdm

        if self.unit_scale:
            return tqdm.format_sizeof(x)
        return f"{x:,.0f}" if float(x).is_integer() or x >= 100 else f"{x:.3g}"

    def _line(self, now: float, done: bool = False) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        elapsed = max(now - self._start, 1e-9)
        rate = self.n / elapsed
        unit = self.unit
        count = self._amount(self.n) + ("" if self.total is None else f"/{self._amount(self.total)}")
        parts = [f"{self.desc}: {count}{unit}" if self.desc else f"{count}{unit}"]
        if self.total and not done:
            parts.append(f"{100 * self.n / self.total:.0f}%")
        parts.append(f"{self._amount(rate)}{unit}/s")
        if done:
            parts.append(f"done in {tqdm.format_interval(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"eta {tqdm.format_interval((self.total - self.n) / rate)}")
        print(", ".join(parts), file=self.file, flush=True)
        self._wrote = True
