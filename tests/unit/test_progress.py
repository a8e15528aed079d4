"""Progress: a bar on a terminal, plain lines (no CR, no escape sequences) anywhere else."""

from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import termios

from londinium.progress import ProgressLines, progress

REDRAW = re.compile(r"\r|\x1b\[")


def test_off_a_terminal_progress_is_plain_lines_with_count_rate_and_eta():
    out = io.StringIO()  # not a terminal, as a log file or a pipe
    bar = progress(total=1000, desc="corpus: near-duplicates", unit=" texts", every_s=0, file=out)
    assert isinstance(bar, ProgressLines)
    with bar:
        for _ in range(4):
            bar.update(100)
    lines = out.getvalue().splitlines()
    assert not REDRAW.search(out.getvalue())
    assert len(lines) == 5  # one per update (every_s=0), then the closing line
    assert re.fullmatch(r"corpus: near-duplicates: 400/1,000 texts, 40%, [\d.,]+ texts/s, eta \d\d:\d\d", lines[3])
    assert re.fullmatch(r"corpus: near-duplicates: 400/1,000 texts, [\d.,]+ texts/s, done in \d\d:\d\d", lines[4])


def test_a_short_job_writes_nothing_and_disable_writes_nothing_at_all():
    out = io.StringIO()
    assert list(progress(range(50), desc="quick", file=out)) == list(range(50))  # under every_s: silent
    with progress(total=10, desc="off", disable=True, every_s=0, file=out) as bar:
        bar.update(5)
    assert out.getvalue() == ""


def test_byte_counts_are_scaled_as_tqdm_scales_them():
    out = io.StringIO()
    with progress(total=None, desc="shards: encode train", unit="B", unit_scale=True, every_s=0, file=out) as bar:
        bar.update(2_500_000)
    assert out.getvalue().splitlines()[0].startswith("shards: encode train: 2.50MB, ")


def test_on_a_terminal_it_is_tqdm_s_bar():
    leader, follower = os.openpty()  # a real terminal, 100 columns wide
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with os.fdopen(follower, "w") as tty:
        with progress(total=3, desc="bar", file=tty) as bar:
            bar.update(3)
        tty.flush()
    os.set_blocking(leader, False)
    drawn = b""
    while True:  # everything written is in the terminal's buffer already
        try:
            drawn += os.read(leader, 65536)
        except (BlockingIOError, OSError):  # drained (Linux reports a closed follower as EIO)
            break
    os.close(leader)
    drawn = drawn.decode()
    assert "\r" in drawn and "bar: 100%" in drawn
