"""Scanning an answer's text for what must not reach the client, as it streams: deny-listed words,
regular expressions, and personal data (Presidio), each masked (`[NAME]`) or blocking the rest.

    scanner = Scanner(rules)
    out, blocked = scanner.feed(piece)      # the text that may go out now (masked), and whether to stop
    out, blocked = scanner.flush()          # at the end: whatever was held back

A stream is scanned without waiting for its end: each piece goes out at once except the tail that a
match could still need.

- **Regular expressions and deny-lists** use the `regex` package's partial matching: a match that
  runs into the end of the text seen so far may still grow (or only then become a match), so the text
  from its start is held back until the next piece settles it. A tail longer than `max_hold` goes out
  anyway (a pattern such as `\\d+` fed an endless number would otherwise hold the whole answer).
- **Personal data**: Presidio's recognizers cannot say "this may become an email", so the last
  `pii_hold` characters are held: an entity that starts before them has that many characters
  already in view, more than any structured entity is long (a spaced IBAN is at most 42), so it is
  whole, and is found or not now.

A finding whose action is `block` ends the text at its start: what comes before it goes out, it and
everything after never do (the step reports `finish_reason` "content_filter", as OpenAI's hosted
filters do).
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

import regex


@dataclass
class Rules:
    """What to look for: compiled patterns by name, a PII detector and its entities, each name's action."""

    patterns: dict[str, Any] = field(default_factory=dict)  # name -> compiled `regex` pattern
    detector: Any = None  # pii_detect.Detector, when personal data is looked for
    actions: dict[str, str] = field(default_factory=dict)  # name or entity -> "mask" or "block"
    pii_hold: int = 64
    max_hold: int = 1024

    @classmethod
    def build(cls, patterns: dict[str, str], deny_lists: dict[str, list[str]], actions: dict[str, str],
              detector: Any = None, pii_hold: int = 64, max_hold: int = 1024) -> Rules:
        compiled = {name: regex.compile(p) for name, p in patterns.items()}
        for name, words in deny_lists.items():  # whole words, any case
            compiled[name] = regex.compile(r"(?i)\b(?:" + "|".join(regex.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b")
        return cls(compiled, detector, actions, pii_hold, max_hold)


@dataclass
class Finding:
    name: str
    start: int
    end: int


class Scanner:
    """One text (a choice of an answer) fed piece by piece; see the module docstring."""

    def __init__(self, rules: Rules):
        self.rules = rules
        self.held = ""
        self.blocked = False
        self.found: Tally[str] = Tally()

    def feed(self, piece: str) -> tuple[str, bool]:
        return self._scan(self.held + piece, final=False)

    def flush(self) -> tuple[str, bool]:
        return self._scan(self.held, final=True)

    def _scan(self, text: str, final: bool) -> tuple[str, bool]:
        if self.blocked:
            return "", True
        findings, cut = self._find(text, final)
        if not final and len(text) - cut > self.rules.max_hold:
            cut = len(text) - self.rules.max_hold
            findings = [f for f in findings if f.end <= cut]
        out, last = [], 0
        for f in sorted(findings, key=lambda f: (f.start, -f.end)):
            if f.start < last or f.end > cut:  # overlaps one already taken, or not yet settled
                continue
            self.found[f.name] += 1
            out.append(text[last:f.start])
            if self.rules.actions.get(f.name) == "block":
                self.blocked, self.held = True, ""
                return "".join(out), True
            out.append(f"[{f.name}]")
            last = f.end
        out.append(text[last:cut])
        self.held = text[cut:]
        return "".join(out), False

    def _find(self, text: str, final: bool) -> tuple[list[Finding], int]:
        """Complete findings, and where the text that may go out now ends."""
        findings: list[Finding] = []
        cut = len(text)
        for name, pattern in self.rules.patterns.items():
            for m in pattern.finditer(text, partial=not final, overlapped=False):
                if not final and (m.partial or m.end() == len(text)):  # may still grow, or become a match
                    cut = min(cut, m.start())
                elif m.end() > m.start():
                    findings.append(Finding(name, m.start(), m.end()))
        if self.rules.detector is not None:
            spans = [s for s in self.rules.detector.find(text) if s.entity in self.rules.actions]
            findings += [Finding(s.entity, s.start, s.end) for s in spans]
            if not final:
                cut = min(cut, max(0, len(text) - self.rules.pii_hold))
        # a finding that straddles the cut waits whole
        moved = True
        while moved:
            moved = False
            for f in findings:
                if f.start < cut < f.end:
                    cut, moved = f.start, True
        return findings, cut
