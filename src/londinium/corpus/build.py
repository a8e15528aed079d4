"""The corpus stage: sources -> extracted, cleaned, filtered, deduplicated, segmented, split corpus.

    for each source (registry order), for each file (sorted):
        extract -> texts -> normalise into blocks (prose, code, tables) -> editorial matter out
        (gutenberg texts) -> quality filters on the prose -> exact dedup
    near-duplicate grouping over all kept texts, words folded as the corpus profile says for each
    source (with keep-one: the longest of each group kept)
    paragraph language filter on prose, the source's code/tables policy -> segments of
    <= max_doc_chars -> split by group
    write train/val/test.jsonl, rejections.jsonl, report.json/.md, chart; then record the manifest

A source that fails (download error, corrupt archive) is recorded and skipped; a file that cannot
be used is recorded and skipped; with `strict` either stops the build. The build fails only when
no document is left. Outputs are written atomically and the manifest entry comes last, so a crash
leaves either the previous complete corpus (no longer marked done) or nothing a later stage trusts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from londinium.config import CorpusConfig, validate
from londinium.corpus import editorial, quality
from londinium.corpus.blocks import PROSE, Block, join
from londinium.corpus.clean import normalise_blocks
from londinium.corpus.dedup import exact_key, group_near_duplicates, keep_one
from londinium.corpus.extract import ExtractError, extract
from londinium.corpus.report import Ledger, card, chart, markdown
from londinium.corpus.segment import pack
from londinium.corpus.sources import SourceSpec, fetch_source, load_registry, printable_name, selector, walk_local
from londinium.corpus.split import SPLIT_NAMES, assign_splits
from londinium.errors import LondiniumError
from londinium.files import replace_together, sha256_file, write_json, write_jsonl, write_text
from londinium.progress import progress, say
from londinium.profiles import Profile, registry_profile
from londinium.workspace import Workspace, default_cache_dir

# Bump when the processing changes what a given config and input produce, so old corpora rebuild.
BUILDER_VERSION = 2


@dataclass
class Text:
    key: str  # unique in the corpus: "<source>/<file>", plus "@<title>" for one of several texts in a file
    source: str
    file: str
    title: str
    text: str
    period: list[int]
    blocks: list[Block]  # the text's prose paragraphs, code and tables (blocks.parse)


@dataclass
class CorpusSummary:
    ran: bool  # False when the corpus was already up to date
    splits: dict[str, dict[str, int]]  # split -> {"documents", "chars"}
    report_md: Path


# ---- fingerprint: what the outputs depend on besides the [corpus] section --------------------------


def _local_digest(spec: SourceSpec) -> str | dict[str, str]:
    """Content hashes of a local source's files, so editing one of them rebuilds the corpus."""
    root = Path(spec.location)
    if root.is_file():
        return sha256_file(root)
    if not root.is_dir():
        return "missing"
    wanted = selector(spec.files, spec.exclude)
    skipped: dict[str, str] = {}
    out: dict[str, str] = {}
    # The same walk the source is read with: links are listed (so adding one rebuilds) but never read.
    for rel in walk_local(root, lambda rel, why: skipped.__setitem__(printable_name(rel), "skipped")):
        if wanted(rel) and (root / rel).is_file():
            out[printable_name(rel)] = sha256_file(root / rel)
    return dict(sorted({**out, **skipped}.items()))


def fingerprint(specs: list[SourceSpec]) -> dict[str, Any]:
    return {
        "builder": BUILDER_VERSION,
        "registry": [dataclasses.asdict(s) for s in specs],
        "local_files": {s.id: _local_digest(s) for s in specs if s.kind == "local"},
    }


# ---- reading sources ------------------------------------------------------------------------------


def _read_source(spec: SourceSpec, cfg: CorpusConfig, ledger: Ledger, seen: dict[str, str], out: list[Text]) -> None:
    """Append the source's usable texts to `out`, recording every file and rejection in `ledger`."""
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    sid = spec.id

    def on_skip(name: str, reason: str) -> None:
        if cfg.strict:
            raise LondiniumError(f"source '{sid}': file {name}: {reason} (corpus.strict is on)")
        ledger.files[sid][name] = "rejected"
        ledger.reject(sid, name, "file", "skipped", reason)

    raw_files = fetch_source(spec, cache_dir, int(cfg.max_file_mb * 1024 * 1024), cfg.download_timeout_s, cfg.download_retries, on_skip)
    for raw in progress(raw_files, desc=f"  {sid}", unit=" files", leave=False):
        name = raw.name
        try:
            result = extract(raw, spec)
        except ExtractError as e:
            if cfg.strict:
                raise LondiniumError(f"source '{sid}': {e} (corpus.strict is on)") from None
            ledger.files[sid][name] = "rejected"
            ledger.reject(sid, name, "file", "unreadable", str(e))
            continue
        if result.bad_rows:
            if cfg.strict:
                raise LondiniumError(f"source '{sid}': {name} {result.bad_rows[0]} (corpus.strict is on)")
            ledger.reject(sid, name, "rows", "bad-rows",
                          f"{len(result.bad_rows)} of {result.rows} rows skipped: " + "; ".join(result.bad_rows[:5]))
        if any(t.encoding == "cp1252" for t in result.texts):
            ledger.legacy_decoded[sid].append(name)
        kept_any = False
        titles: dict[str, int] = {}
        for t in result.texts:
            key = f"{sid}/{name}"
            if len(result.texts) > 1:
                titles[t.title] = titles.get(t.title, 0) + 1
                key += f"@{t.title}" + (f"~{titles[t.title]}" if titles[t.title] > 1 else "")
            blocks = normalise_blocks(t.text, spec.whitespace)
            if result.format == "gutenberg":
                blocks = _without_editorial(blocks, sid, name, t.title, ledger)
                if not blocks:
                    ledger.reject(sid, name, "text", "nothing-left", "every paragraph is editorial matter", t.title, 0)
                    ledger.texts[sid][key] = "rejected"
                    continue
            text = join(blocks)
            scores = quality.score(text, blocks)
            reason = quality.rejection_reason(scores, cfg)
            if reason is None and (first := seen.get(exact_key(text))):
                ledger.exact_duplicates.setdefault(first, []).append(key)
                ledger.reject(sid, name, "text", "exact-duplicate", f"same text as {first}", t.title, len(text))
                ledger.texts[sid][key] = "rejected"
                continue
            if reason is not None:
                # A rejected file's own words stay out of its record: the title of a single-text
                # file is its first line; the texts of a multi-text file are told apart by theirs.
                ledger.reject(sid, name, "text", reason, quality.explain(reason, scores, cfg),
                              t.title if len(result.texts) > 1 else "", len(text), scores.as_dict())
                ledger.texts[sid][key] = "rejected"
                continue
            seen[exact_key(text)] = key
            out.append(Text(key, sid, name, t.title, text, list(spec.period), blocks))
            kept_any = True
        # provisional: a file is kept when a text survives; segmentation may still empty it
        ledger.files[sid][name] = "kept" if kept_any else "rejected"


def _without_editorial(blocks: list[Block], sid: str, name: str, title: str, ledger: Ledger) -> list[Block]:
    """The blocks of an edition without its editor's matter, each section of which is recorded."""
    kept, sections = editorial.split(blocks)
    for s in sections:
        ledger.reject(sid, name, "section", "editorial", f"{s.what}, {len(s.blocks)} paragraph(s) from {s.heading[:60]!r}",
                      title, s.chars)
    return kept


def _keep_one(texts: list[Text], grouping, ledger: Ledger) -> tuple[list[Text], dict[str, str]]:
    """`keep-one`: the longest text of each near-duplicate group stays; the others are recorded as
    rejections naming it. Returns (the texts left, left-out key -> kept key)."""
    kept_for = keep_one(grouping, {t.key: len(t.text) for t in texts})
    for t in texts:
        if t.key in kept_for:
            ledger.reject(t.source, t.file, "text", "near-duplicate", f"near-duplicate of {kept_for[t.key]}, which is kept "
                          "(corpus.near_duplicates = \"keep-one\")", t.title, len(t.text))
            ledger.texts[t.source][t.key] = "rejected"
    return [t for t in texts if t.key not in kept_for], kept_for


# ---- the stage ------------------------------------------------------------------------------------


def _segment(texts: list[Text], cfg: CorpusConfig, specs: dict[str, SourceSpec], ledger: Ledger) -> list[tuple[Text, list[str]]]:
    """Paragraph language filter on prose, the source's code and tables policy, then documents of
    at most max_doc_chars, per text."""
    out = []
    for t in texts:
        spec = specs[t.source]
        kept: list[Block] = []
        for b in t.blocks:
            if b.kind != PROSE:
                policy, setting = (spec.code, "code") if b.kind == "code" else (spec.tables, "tables")
                if policy == "drop":
                    ledger.reject(t.source, t.file, "paragraph", b.kind, f"{setting} = \"drop\" for source '{t.source}'",
                                  t.title, len(b.text))
                else:
                    ledger.keep_block(t.source, b.kind, len(b.text))
                    kept.append(b)
                continue
            share = quality.foreign_paragraph(b.text, cfg.min_english_paragraph)
            if share is None:
                kept.append(b)
            else:
                words = len(b.text.split())
                ledger.reject(t.source, t.file, "paragraph", "not-english",
                              f"prose whose English function words are {share:.2f} of its {words} words, against "
                              f"corpus.min_english_paragraph = {cfg.min_english_paragraph}: {b.text[:60]!r}",
                              t.title, len(b.text), {"english": round(share, 4), "words": words})
        docs = pack(kept, cfg.max_doc_chars, keep_gaps=spec.whitespace == "keep")
        if not docs:
            ledger.reject(t.source, t.file, "text", "nothing-left", "every paragraph was rejected", t.title, 0)
        ledger.texts[t.source][t.key] = "kept" if docs else "rejected"
        out.append((t, docs))
    return out


def _build(ws: Workspace, cfg: CorpusConfig, specs: list[SourceSpec], profile: Profile) -> list[Path]:
    ledger = Ledger(specs)
    texts: list[Text] = []
    seen: dict[str, str] = {}
    for spec in progress(specs, desc="corpus: sources", unit=" source"):
        before = len(texts)
        try:
            _read_source(spec, cfg, ledger, seen, texts)
        except LondiniumError as e:
            if cfg.strict:
                raise
            # a source is used whole or not at all: forget the part read before it failed
            dropped = {t.key for t in texts[before:]}
            del texts[before:]
            seen = {k: v for k, v in seen.items() if v not in dropped}
            ledger.exact_duplicates = {k: v for k, v in ledger.exact_duplicates.items() if k not in dropped}
            ledger.forget_source(spec.id)
            ledger.failed[spec.id] = str(e)
            ledger.reject(spec.id, None, "source", "source-failed", str(e))
            say(f"corpus: source '{spec.id}' skipped: {e}")

    with progress(total=len(texts), desc="corpus: near-duplicates", unit=" texts", leave=False) as bar:
        source_of = {t.key: t.source for t in texts}
        grouping = group_near_duplicates(
            [(t.key, t.text) for t in texts], cfg.near_dup_threshold, cfg.near_dup_containment,
            cfg.shingle_words, cfg.num_perm, fold_for=lambda key: profile.fold_for(source_of[key]), progress=bar,
        )
    group_of, kept_for = dict(grouping.group_of), {}
    if near_duplicates(cfg) == "keep-one":
        texts, kept_for = _keep_one(texts, grouping, ledger)
        group_of.update({kept: kept for kept in kept_for.values()})  # the one kept is a group of its own
    segmented = _segment(texts, cfg, {s.id: s for s in specs}, ledger)

    source_of_group: dict[str, str] = {}
    chars_of_group: dict[str, int] = {}
    for t, docs in segmented:
        if docs:
            group = group_of[t.key]
            source_of_group.setdefault(group, t.source)  # the group's first text names its source
            chars_of_group[group] = chars_of_group.get(group, 0) + sum(len(d) for d in docs)
    groups_by_source: dict[str, list[str]] = {}
    for group, source in source_of_group.items():
        groups_by_source.setdefault(source, []).append(group)
    split_of = assign_splits(groups_by_source, cfg.val_fraction, cfg.test_fraction, cfg.seed, chars_of_group)

    counters: dict[tuple[str, str], int] = {}
    for t, docs in segmented:
        group = group_of[t.key]
        for doc in docs:
            n = counters.get((t.source, t.file), 0)
            counters[(t.source, t.file)] = n + 1
            ledger.docs[split_of[group]].append({
                "id": f"{t.source}/{t.file}#{n}", "text": doc, "source": t.source, "period": t.period,
                "group": group, "title": t.title,
            })
    for sid, files in ledger.files.items():  # files whose every text was emptied by the paragraph filter
        for name in files:
            if files[name] == "kept" and (sid, name) not in counters:
                files[name] = "rejected"

    for group, members in sorted(grouping.members().items()):
        if len(members) > 1:
            pairs = [dataclasses.asdict(p) for p in grouping.pairs if grouping.group_of[p.a] == group]
            kept = next(m for m in members if m not in kept_for) if kept_for else None
            ledger.near_groups.append({"group": group, "split": split_of.get(group_of[kept] if kept else group),
                                       "members": members, "pairs": pairs, "kept": kept})

    if not any(ledger.docs.values()):
        why = "; ".join(f"{sid}: {err}" for sid, err in ledger.failed.items()) or "every file was rejected"
        write_jsonl(ws.corpus_rejections, ledger.rejections)  # written before the message points at it
        raise LondiniumError(f"corpus: no usable documents ({why}); see {ws.corpus_rejections} and fix the sources registry")

    data_card = card(ledger, {"section": dataclasses.asdict(cfg), "builder": BUILDER_VERSION,
                              "near_duplicates": near_duplicates(cfg)})
    data_card["profile"] = profile.to_record()  # what later stages read through profiles.profile_for
    paths = {"rejections": ws.corpus_rejections, "chart": ws.corpus_chart}
    # Splits first, card last: a reader of the card can trust that the splits it describes exist.
    # All splits are written in full before any replaces the old one (and run_stage has already
    # dropped the old build's manifest entry), so no later stage can read a mix of two builds.
    with replace_together([ws.corpus_split(split) for split in SPLIT_NAMES]) as temps:
        for split, tmp in zip(SPLIT_NAMES, temps):
            write_jsonl(tmp, ledger.docs[split])
    write_jsonl(ws.corpus_rejections, ledger.rejections)
    chart(data_card, ws.corpus_chart)
    write_json(ws.corpus_report_json, data_card)
    write_text(ws.corpus_report_md, markdown(data_card, paths))
    return [*(ws.corpus_split(s) for s in SPLIT_NAMES), ws.corpus_rejections, ws.corpus_chart,
            ws.corpus_report_json, ws.corpus_report_md]


def near_duplicates(cfg: CorpusConfig) -> str:
    """`corpus.near_duplicates` with `auto` decided: `group` for the embedded registry, whose Folio
    and modern texts of a play are near-duplicates on purpose (the split keeps them together);
    `keep-one` for a user's registry, where near-duplicates are mostly copies (one page as HTML and
    as its source, mirrors, reprints) that only weigh the copied text twice in training."""
    if cfg.near_duplicates != "auto":
        return cfg.near_duplicates
    return "keep-one" if cfg.sources else "group"


def _print_summary(ws: Workspace, report: dict[str, Any]) -> dict[str, dict[str, int]]:
    print(f"corpus: data card {ws.corpus_report_md}")
    out = {}
    for split in SPLIT_NAMES:
        s = report["splits"][split]
        by = ", ".join(f"{sid} {v['documents']:,}" for sid, v in s["by_source"].items())
        print(f"  {split:5s} {s['documents']:7,} documents {s['chars']:12,} chars {s['groups']:5,} groups ({by})")
        out[split] = {"documents": s["documents"], "chars": s["chars"]}
    if failed := [s for s in report["sources"] if s["status"] == "failed"]:
        for s in failed:
            print(f"  skipped source '{s['id']}': {s['error']}")
    return out


def failed_last_time(ws: Workspace) -> list[str]:
    """Ids of the sources the last recorded build skipped because they failed (download error,
    corrupt archive), from its data card; [] when there is no recorded build."""
    if "corpus" not in ws.manifest() or not ws.corpus_report_json.is_file():
        return []
    try:
        card = json.loads(ws.corpus_report_json.read_text(encoding="utf-8"))
        return [s["id"] for s in card.get("sources", []) if s.get("status") == "failed"]
    except (ValueError, OSError, AttributeError, KeyError, TypeError):
        return []  # an unreadable card: the up-to-date check (its hash) decides


def build_corpus(ws: Workspace, cfg: CorpusConfig, force: bool = False) -> CorpusSummary:
    """Build (or confirm up to date) the corpus in `ws` from the sources registry in `cfg.sources`.

    A build that had to skip a downloaded source that failed is not up to date: the failure (a
    server down, a timeout) is usually passing, and a corpus missing a source is not what the
    registry asks for, so the next build tries again. (A local source needs no retry: its files are
    in the fingerprint, so fixing them rebuilds anyway.) To stop retrying, remove the source.
    """
    validate(cfg)
    specs = load_registry(cfg.sources or None)
    profile = registry_profile(cfg.sources or None)
    fetched = {s.id for s in specs if s.kind != "local"}
    retry = [sid for sid in failed_last_time(ws) if sid in fetched]
    if retry and not force:
        print(f"corpus: the last build skipped failed source(s) {', '.join(repr(r) for r in retry)}: building again to retry them "
              f"(remove a source from {cfg.sources or 'the sources registry'} to stop retrying it)")
    ran = ws.run_stage("corpus", cfg, lambda: _build(ws, cfg, specs, profile), fingerprint={**fingerprint(specs), "profile": profile.to_record()},
                       force=force or bool(retry))
    report = json.loads(ws.corpus_report_json.read_text(encoding="utf-8"))
    splits = _print_summary(ws, report)
    if not splits["val"]["documents"]:
        print("  warning: the validation split is empty (fewer than 3 document groups in every source); add texts")
    return CorpusSummary(ran, splits, ws.corpus_report_md)

