"""The data card: what went into the corpus, what was left out and why, and how it was split.

`Ledger` is filled in by the build as it goes (every file, text, rejection and document); `card()`
turns it into the JSON card, `markdown()` into the human one and `chart()` into a PNG. The numbers
are counted from the records, never adjusted to fit: per source and in total, files and texts read
= kept + rejected, characters read = kept + rejected (characters after cleaning; the blank lines
between paragraphs are not counted), and the splits' documents and characters sum to what was kept.
`card()` checks those identities and refuses to write a card that does not add up.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from londinium.corpus.sources import SourceSpec
from londinium.corpus.split import SPLIT_NAMES


@dataclass
class Ledger:
    specs: list[SourceSpec]
    files: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))  # source -> file -> kept|rejected
    texts: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))  # source -> text key -> kept|rejected
    rejections: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # source -> why the whole source failed
    docs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {s: [] for s in SPLIT_NAMES})
    exact_duplicates: dict[str, list[str]] = field(default_factory=dict)  # kept text key -> duplicate keys
    near_groups: list[dict[str, Any]] = field(default_factory=list)
    legacy_decoded: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # source -> "code"/"table" -> {"blocks", "chars"} of the code and tables kept (those dropped are rejections)
    kept_blocks: dict[str, dict[str, dict[str, int]]] = field(default_factory=lambda: defaultdict(dict))

    def reject(self, source: str, file: str | None, level: str, reason: str, detail: str = "", title: str = "",
               chars: int = 0, scores: dict | None = None) -> None:
        """Record one rejection: level is source, file, rows, text or paragraph."""
        self.rejections.append({"source": source, "file": file, "level": level, "reason": reason, "detail": detail,
                                "title": title, "chars": chars, "scores": scores})

    def keep_block(self, source: str, kind: str, chars: int) -> None:
        """Count one code block or table that goes into the documents."""
        slot = self.kept_blocks[source].setdefault(kind, {"blocks": 0, "chars": 0})
        slot["blocks"] += 1
        slot["chars"] += chars

    def forget_source(self, source: str) -> None:
        """Drop what a source contributed before it failed: a source is used whole or not at all."""
        self.files.pop(source, None)
        self.texts.pop(source, None)
        self.rejections = [r for r in self.rejections if r["source"] != source]
        self.legacy_decoded.pop(source, None)


def _zero() -> dict[str, int]:
    return {"read": 0, "kept": 0, "rejected": 0}


def card(ledger: Ledger, config: dict[str, Any]) -> dict[str, Any]:
    """The JSON data card (see module docstring)."""
    sources: list[dict[str, Any]] = []
    for spec in ledger.specs:
        sid = spec.id
        files, texts = ledger.files.get(sid, {}), ledger.texts.get(sid, {})
        rej = [r for r in ledger.rejections if r["source"] == sid]
        entry: dict[str, Any] = {
            "id": sid, "title": spec.title, "author": spec.author, "license": spec.license, "period": list(spec.period),
            "kind": spec.kind, "location": spec.location, "format": spec.format,
            "status": "failed" if sid in ledger.failed else "ok", "error": ledger.failed.get(sid),
            "files": {"read": len(files), "kept": sum(v == "kept" for v in files.values()),
                      "rejected": sum(v == "rejected" for v in files.values())},
            "texts": {"read": len(texts), "kept": sum(v == "kept" for v in texts.values()),
                      "rejected": sum(v == "rejected" for v in texts.values())},
            "documents": {}, "chars": {"rejected": sum(r["chars"] for r in rej)}, "groups": {},
            "rejections": dict(Counter(f"{r['level']}:{r['reason']}" for r in rej).most_common()),
            "decoded_as_cp1252": sorted(ledger.legacy_decoded.get(sid, [])),
            "code_and_tables": _code_and_tables(ledger.kept_blocks.get(sid, {}), rej),
            "editorial": {"sections": sum(r["reason"] == "editorial" for r in rej),
                          "chars": sum(r["chars"] for r in rej if r["reason"] == "editorial")},
        }
        for split in SPLIT_NAMES:
            rows = [d for d in ledger.docs[split] if d["source"] == sid]
            entry["documents"][split] = len(rows)
            entry["chars"][split] = sum(len(d["text"]) for d in rows)
            entry["groups"][split] = len({d["group"] for d in rows})
        entry["documents"]["total"] = sum(entry["documents"][s] for s in SPLIT_NAMES)
        entry["chars"]["kept"] = sum(entry["chars"][s] for s in SPLIT_NAMES)
        entry["chars"]["read"] = entry["chars"]["kept"] + entry["chars"]["rejected"]
        sources.append(entry)

    totals: dict[str, Any] = {}
    for unit in ("files", "texts", "documents", "chars", "groups"):
        keys = {k for s in sources for k in s[unit]}
        totals[unit] = {k: sum(s[unit].get(k, 0) for s in sources) for k in sorted(keys)}

    reasons: dict[tuple[str, str], dict[str, int]] = {}
    for r in ledger.rejections:
        slot = reasons.setdefault((r["level"], r["reason"]), {"count": 0, "chars": 0})
        slot["count"] += 1
        slot["chars"] += r["chars"]
    splits = {
        split: {
            "documents": len(ledger.docs[split]),
            "chars": sum(len(d["text"]) for d in ledger.docs[split]),
            "groups": len({d["group"] for d in ledger.docs[split]}),
            "by_source": {s["id"]: {"documents": s["documents"][split], "chars": s["chars"][split]} for s in sources},
        }
        for split in SPLIT_NAMES
    }
    out = {
        "sources": sources,
        "totals": totals,
        "splits": splits,
        "rejection_reasons": [{"level": lv, "reason": rs, **v} for (lv, rs), v in sorted(reasons.items(), key=lambda kv: -kv[1]["count"])],
        "exact_duplicates": [{"kept": k, "duplicates": v} for k, v in ledger.exact_duplicates.items()],
        "near_duplicate_groups": ledger.near_groups,
        "config": config,
    }
    problems = check(out)
    if problems:  # a bug in the build, not bad input: keep the traceback
        raise AssertionError("data card does not add up: " + "; ".join(problems))
    return out


def _code_and_tables(kept: dict[str, dict[str, int]], rejections: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out = {}
    for kind in ("code", "table"):
        dropped = [r for r in rejections if r["level"] == "paragraph" and r["reason"] == kind]
        out[kind] = {"kept": kept.get(kind, {}).get("blocks", 0), "kept_chars": kept.get(kind, {}).get("chars", 0),
                     "dropped": len(dropped), "dropped_chars": sum(r["chars"] for r in dropped)}
    return out


def check(c: dict[str, Any]) -> list[str]:
    """The identities a card must satisfy; returns what fails (empty when it adds up)."""
    problems = []
    for s in [*c["sources"], {"id": "total", **c["totals"]}]:
        for unit in ("files", "texts"):
            if s[unit]["read"] != s[unit]["kept"] + s[unit]["rejected"]:
                problems.append(f"{s['id']}: {unit} read != kept + rejected")
        if s["chars"]["read"] != s["chars"]["kept"] + s["chars"]["rejected"]:
            problems.append(f"{s['id']}: chars read != kept + rejected")
        if s["chars"]["kept"] != sum(s["chars"][x] for x in SPLIT_NAMES):
            problems.append(f"{s['id']}: chars kept != sum over splits")
        if s["documents"]["total"] != sum(s["documents"][x] for x in SPLIT_NAMES):
            problems.append(f"{s['id']}: documents != sum over splits")
    for split in SPLIT_NAMES:
        if c["splits"][split]["documents"] != c["totals"]["documents"][split]:
            problems.append(f"{split}: documents differ between split and source totals")
    return problems


# ---- rendering ----------------------------------------------------------------------------------


def _n(x: int) -> str:
    return f"{x:,}"


def markdown(c: dict[str, Any], paths: dict[str, Path]) -> str:
    """The human-readable card."""
    lines = ["# Corpus data card", ""]
    t = c["totals"]
    d = t["documents"]
    lines += [
        f"{_n(d['total'])} documents (train {_n(d['train'])}, validation {_n(d['val'])}, test {_n(d['test'])}), "
        f"{_n(t['chars']['kept'])} characters, from "
        f"{_n(t['files']['kept'])} of {_n(t['files']['read'])} files in {len(c['sources'])} sources. "
        f"Rejected: {_n(t['files']['rejected'])} files, {_n(t['texts']['rejected'])} texts, "
        f"{_n(t['chars']['rejected'])} characters (details in `{paths['rejections'].name}`).",
        "",
        "Characters are counted after cleaning; read = kept + rejected, and the splits sum to what was kept.",
        "",
        "## Sources",
        "",
        "| source | title | author | period | licence | status |",
        "|---|---|---|---|---|---|",
    ]
    for s in c["sources"]:
        status = "ok" if s["status"] == "ok" else f"**failed**: {s['error']}"
        period = f"{s['period'][0]}-{s['period'][1]}" if any(s["period"]) else ""  # (0, 0): the source states none
        lines.append(f"| {s['id']} | {s['title']} | {s['author']} | {period} | {s['license']} | {status} |")
    lines += ["", "## Kept and rejected", "",
              "| source | files read | kept | rejected | texts read | kept | rejected | chars read | kept | rejected |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in [*c["sources"], {"id": "**total**", **t}]:
        f, x, ch = s["files"], s["texts"], s["chars"]
        lines.append(f"| {s['id']} | {_n(f['read'])} | {_n(f['kept'])} | {_n(f['rejected'])} | {_n(x['read'])} | "
                     f"{_n(x['kept'])} | {_n(x['rejected'])} | {_n(ch['read'])} | {_n(ch['kept'])} | {_n(ch['rejected'])} |")
    lines += ["", "## Splits (by document group, stratified by source)", "",
              "| source | " + " | ".join(f"{s} docs | {s} chars | {s} groups" for s in SPLIT_NAMES) + " |",
              "|---|" + "---:|" * (3 * len(SPLIT_NAMES))]
    for s in [*c["sources"], {"id": "**total**", **t}]:
        cells = [f"{_n(s['documents'][x])} | {_n(s['chars'][x])} | {_n(s['groups'].get(x, 0))}" for x in SPLIT_NAMES]
        lines.append(f"| {s['id']} | " + " | ".join(cells) + " |")
    lines += ["", f"![characters by source per split]({paths['chart'].name})", "", "## Rejection reasons", ""]
    if c["rejection_reasons"]:
        lines += ["| level | reason | count | chars |", "|---|---|---:|---:|"]
        lines += [f"| {r['level']} | {r['reason']} | {_n(r['count'])} | {_n(r['chars'])} |" for r in c["rejection_reasons"]]
    else:
        lines.append("Nothing was rejected.")
    if any(s["editorial"]["sections"] for s in c["sources"]):
        lines += ["", "## Editorial matter taken out", "",
                  "Introductions, notes, indexes, title pages and transcriber's notes that an edition adds to the text "
                  "(`gutenberg` texts; each section is a `section` rejection in the log).", "",
                  "| source | sections | chars |", "|---|---:|---:|"]
        lines += [f"| {s['id']} | {_n(s['editorial']['sections'])} | {_n(s['editorial']['chars'])} |"
                  for s in c["sources"] if s["editorial"]["sections"]]
    code = [s for s in c["sources"] if any(v["kept"] or v["dropped"] for v in s["code_and_tables"].values())]
    if code:
        lines += ["", "## Code and tables", "",
                  "Recognised apart from prose: kept verbatim and not judged by the prose filters, or dropped where "
                  "the source says `code = \"drop\"` / `tables = \"drop\"`.", "",
                  "| source | code kept | chars | code dropped | chars | tables kept | chars | tables dropped | chars |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in code:
            x, y = s["code_and_tables"]["code"], s["code_and_tables"]["table"]
            lines.append(f"| {s['id']} | " + " | ".join(_n(v) for v in (x["kept"], x["kept_chars"], x["dropped"], x["dropped_chars"],
                                                                    y["kept"], y["kept_chars"], y["dropped"], y["dropped_chars"])) + " |")
    lines += ["", "## Exact duplicates (kept once)", ""]
    if c["exact_duplicates"]:
        lines += [f"- `{d['kept']}` kept; dropped: " + ", ".join(f"`{k}`" for k in d["duplicates"]) for d in c["exact_duplicates"]]
    else:
        lines.append("None.")
    keep_one = c["config"].get("near_duplicates") == "keep-one"
    lines += ["", "## Near-duplicate groups " + ("(the longest kept, the others rejected)" if keep_one else "(kept together in one split)"), ""]
    if c["near_duplicate_groups"]:
        lines += ["| group | split | members | similarity |", "|---|---|---|---|"]
        for g in c["near_duplicate_groups"]:
            sims = "; ".join(f"{p['signal']} J={p['jaccard']:.2f} C={p['containment']:.2f}" for p in g["pairs"])
            members = "<br>".join(f"`{m}`" + (" (kept)" if m == g.get("kept") else "") for m in g["members"])
            lines.append(f"| `{g['group']}` | {g['split']} | {members} | {sims} |")
    else:
        lines.append("None.")
    if profile := c.get("profile"):
        lines += ["", "## Profile", "", f"**{profile['name']}**: {profile['description']} Spelling folding: {profile['folding']}"
                  + "".join(f"; source `{sid}`: {f}" for sid, f in profile["source_folding"].items()) + ". (docs/profiles.md)"]
    cfg = c["config"]
    lines += ["", "## Settings", "", "```", *(f"{k} = {v!r}" for k, v in cfg.get("section", {}).items()), "```", ""]
    return "\n".join(lines)


def chart(c: dict[str, Any], path: Path) -> None:
    """Characters by source in each split, one panel per split (val/test are ~20x smaller than train)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from londinium.files import atomic_write

    ids = [s["id"] for s in c["sources"]]
    fig, axes = plt.subplots(1, len(SPLIT_NAMES), figsize=(4 * len(SPLIT_NAMES), 3.6))
    for ax, split in zip(axes, SPLIT_NAMES):
        values = [c["splits"][split]["by_source"][i]["chars"] / 1e6 for i in ids]
        ax.bar(ids, values, color=[f"C{k}" for k in range(len(ids))])
        ax.set_title(f"{split}: {c['splits'][split]['documents']:,} docs")
        ax.set_ylabel("million characters")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("Characters by source per split")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
