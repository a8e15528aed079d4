"""The playground's text colours meet WCAG AA: 4.5:1 for text on its background (WCAG 2.2, 1.4.3),
3:1 for focus rings and outlines (1.4.11). The pairs are read from the page's stylesheet, so a
colour changed there is checked here; the browser test checks the colours as Chromium renders them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parents[2] / "src" / "londinium" / "web" / "style.css").read_text(encoding="utf-8")
TEXT, MARK = 4.5, 3.0


def rgb(colour: str) -> tuple[int, int, int]:
    """#rgb or #rrggbb (the stylesheet writes its opaque colours so), or white."""
    c = {"#fff": "#ffffff", "white": "#ffffff"}.get(colour, colour)
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", c):
        raise ValueError(f"not an opaque hex colour: {colour!r}")
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def luminance(colour: str) -> float:
    """WCAG relative luminance."""
    def channel(v: int) -> float:
        s = v / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def variables() -> dict[str, str]:
    return dict(re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{3,6})\b", CSS))


def resolve(value: str) -> str:
    value = value.strip()
    m = re.fullmatch(r"var\((--[\w-]+)\)", value)
    return variables()[m.group(1)] if m else value


def rules() -> list[tuple[str, dict[str, str]]]:
    """(selector, {property: value}) for every rule of the stylesheet (comments dropped)."""
    text = re.sub(r"/\*.*?\*/", "", CSS, flags=re.S)
    out = []
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", text):
        props = dict((k.strip(), v.strip()) for k, v in (d.split(":", 1) for d in body.split(";") if ":" in d))
        out.append((" ".join(selector.split()), props))
    return out


def pairs() -> list[tuple[str, str, str, float]]:
    """(what, foreground, background, the ratio it needs) for every rule of the stylesheet that sets a
    solid colour: a text colour with its own background; a text colour alone, on the page and on the
    panels; a background alone, under the text it inherits (white in a button, else the page's ink).
    And the focus ring against the page."""
    v = variables()
    solid = re.compile(r"(#[0-9a-fA-F]{3,6}|var\(--[\w-]+\))$")
    out = []
    for selector, props in rules():
        fg = props.get("color")
        bg = (props.get("background") or props.get("background-color") or "").split(" ")[0]
        fg = resolve(fg) if fg and solid.match(fg) else None
        bg = resolve(bg) if bg and solid.match(bg) else None
        if fg and bg:
            out.append((selector, fg, bg, TEXT))
        elif fg:
            out += [(f"{selector} on {g}", fg, v[g], TEXT) for g in ("--paper", "--panel")]
        elif bg:
            out.append((selector, "#ffffff" if selector.startswith("button") else v["--ink"], bg, TEXT))
    out.append(("focus ring on the page", v["--focus"], v["--paper"], MARK))
    return out


@pytest.mark.parametrize("what, fg, bg, needed", pairs(), ids=lambda x: x if isinstance(x, str) and not x.startswith("#") else "")
def test_text_colours_meet_wcag_aa_contrast(what: str, fg: str, bg: str, needed: float) -> None:
    assert contrast(fg, bg) >= needed, f"{what}: {fg} on {bg} is {contrast(fg, bg):.2f}:1, below {needed}:1"


def test_the_stylesheet_pairs_are_found() -> None:
    """The parsing above still sees the stylesheet's rules (a rewrite of it must not pass by checking nothing)."""
    found = {what for what, *_ in pairs()}
    assert {"button", "[role=tab][aria-selected=\"true\"]", "mark", "#error", "#token-tip", ".p0", ".p4",
            'button[aria-pressed="true"]', ".hint on --panel", ".side-error on --paper"} <= found, found


def test_contrast_matches_wcag_reference_values() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)  # the lightest grey that passes on white
    assert contrast("#777777", "#ffffff") < 4.5
