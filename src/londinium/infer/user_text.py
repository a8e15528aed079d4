"""Text from the user (a --prompt, a prompts file, a chat line) is UTF-8, checked before it reaches
the tokenizer.

Policy: text that is not valid UTF-8 is refused with an error naming where it came from and the
first bad byte; it is never guessed at or silently repaired (a replaced character would change what
the model is asked to continue). On POSIX, Python hands bytes that do not decode in argv (and, in
the C locale, on stdin) over as lone surrogates ("surrogateescape"); those are the same bad bytes.
"""

from __future__ import annotations

from londinium.errors import LondiniumError


class UserTextError(LondiniumError):
    """A prompt or chat line is not valid UTF-8 text."""


def check_text(text: str, where: str, fix: str = "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)") -> str:
    """`text` unchanged when it is valid Unicode; else UserTextError naming `where`, the byte and `fix`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError as e:
        bad = text[e.start]
        byte = ord(bad) - 0xDC00 if 0xDC80 <= ord(bad) <= 0xDCFF else None  # a surrogate-escaped byte
        what = f"byte 0x{byte:02x}" if byte is not None else f"lone surrogate U+{ord(bad):04X}"
        raise UserTextError(f"{where} is not valid UTF-8 text ({what} at character {e.start}); {fix}") from None


def decode_line(raw: bytes, where: str) -> str:
    """One line of raw input bytes as text, or UserTextError naming `where` and the byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserTextError(f"{where} is not valid UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start}); "
                            f"convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
