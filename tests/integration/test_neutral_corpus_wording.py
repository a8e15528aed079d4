"""Your own texts (#22): a corpus that did not ask for anything period-specific gets none of it.

The docs corpus (technical documentation and notes, neutral profile) goes through every stage with the real
CLI: corpus build -> tokenizer -> data -> a few train steps -> eval -> export -> index. Nothing they
print or write (reports, hints, the model card), nor what the MCP server tells a host (instructions,
tool descriptions, prompts; listed with the official `mcp` client in process), speaks of period
English, early-modern spelling or 'Thou art', and search matches words as they are spelt. The
default corpus's counterparts are held by test_mcp_server.py and test_search_index.py.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from helpers.docs_corpus import write_docs_corpus
from helpers.prose import modern_prose

from londinium.config import load_config
from londinium.files import read_jsonl
from londinium.workspace import Workspace

from tests.integration.mcp_helpers import text_of
from tests.integration.train_helpers import cli_in_process, sets

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = "docs"
# What only a period corpus may say: its language, its spelling folding, its example prompt, its prompt.
PERIOD = re.compile(r"\bthou\b|period english|english of london|early-modern|shakespeare|\bvpon\b|\bfolio\b|any spelling|"
                    r"spelling does not matter|spellings folded|period_style|1590|period unknown|\| 0-0 \|", re.IGNORECASE)
EVAL = ["eval.splits=['val']", "eval.max_docs=2", "eval.prompts=1", "eval.prompt_chars=60", "eval.reference_words=8",
        "eval.max_new_tokens=4", "eval.temperatures=[0.0]", "eval.cloze_items=40", "eval.cloze_context_words=12",
        "eval.batch_size=16", "train.threads=1"]


def _cli(*args: str) -> str:
    rc, out, err = cli_in_process(list(args))
    assert rc == 0, err
    return out + err


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> dict:
    """The docs corpus through every stage; what each stage printed, by stage."""
    root = tmp_path_factory.mktemp("neutral")
    corpus = write_docs_corpus(root)
    for i in range(12):  # pages of technical prose beside the docs: enough held-out words for a cloze set
        (corpus.root / "notes").mkdir(exist_ok=True)
        (corpus.root / "notes" / f"page{i}.md").write_text(f"# Notes {i}\n\n{modern_prose(i, 24)}\n", encoding="utf-8")
    ws = Workspace(root / "ws")
    w = ["-w", str(ws.root)]
    printed = {
        "corpus": _cli("corpus", "build", *w, "--set", f"corpus.sources={corpus.registry}", "--set", f"corpus.cache_dir={root / 'cache'}",
                       "--set", "corpus.val_fraction=0.2"),
        "tokenizer": _cli("tokenizer", "train", *w, "--set", "tokenizer.vocab_size=384", "--set", "tokenizer.compare_gpt2=false"),
        "data": _cli("data", "prepare", *w),
        "train": _cli("train", *w, "--run", RUN, *sets(4)),
        "eval": _cli("eval", *w, "--run", RUN, *[x for s in EVAL for x in ("--set", s)]),
        "export": _cli("export", *w, "--run", RUN, "--checkpoint", "latest"),
        "index": _cli("index", "build", *w),
    }
    return {"ws": ws, "printed": printed}


def _mcp_listing(ws: Workspace) -> dict:
    """What a host sees of the MCP server: instructions, tools, prompts, one prompt's text, model_info."""
    from mcp import Client

    from londinium.mcp.server import build_server
    from londinium.mcp.service import ModelService

    cfg = load_config(overrides=[f"serve.run={RUN!r}", "serve.checkpoint='latest'"])
    server = build_server(ModelService.load(ws, cfg))

    async def talk() -> dict:
        async with Client(server) as c:
            prompts = (await c.list_prompts()).prompts
            return {"instructions": c.instructions, "tools": (await c.list_tools()).tools, "prompts": prompts,
                    "texts": [await c.get_prompt(p.name, {a.name: "the loop" for a in p.arguments or []}) for p in prompts],
                    "model_info": await c.call_tool("model_info", {}),
                    "search": await c.call_tool("search_corpus", {"query": "loops"})}

    return asyncio.run(talk())


def test_nothing_period_specific_is_printed_written_or_offered_for_a_neutral_corpus(docs):
    ws: Workspace = docs["ws"]
    assert json.loads(ws.corpus_report_json.read_text(encoding="utf-8"))["profile"]["name"] == "neutral"
    for stage, text in docs["printed"].items():
        assert not PERIOD.search(text), (stage, PERIOD.search(text))
    [export] = [p for p in ws.exports_dir.iterdir() if p.is_dir()]
    written = {"corpus report": ws.corpus_report_md, "tokenizer report": ws.tokenizer_report_md,
               "report card": ws.eval_report_md(RUN), "model card": export / "README.md"}
    for name, path in written.items():
        text = path.read_text(encoding="utf-8")
        assert not PERIOD.search(text), (name, PERIOD.search(text))
    card = written["model card"].read_text(encoding="utf-8")
    # the card's example prompt is held-out text of this corpus, and its evaluation names the cloze set
    assert "Cloze set" in card and "Domain probes" not in card and "written 0-0" not in card
    hint = re.search(r'ids = tok\((".*?"), return_tensors', card)
    held_out = " ".join(" ".join(r["text"].split()) for split in ("val", "test") for r in read_jsonl(ws.corpus_split(split)))
    assert hint and json.loads(hint.group(1)) in held_out, hint

    mcp = _mcp_listing(ws)
    offered = [mcp["instructions"], *(json.dumps(t.model_dump(mode="json")) for t in mcp["tools"]),
               *(f"{p.name} {p.description}" for p in mcp["prompts"]),
               *(m.content.text for r in mcp["texts"] for m in r.messages), text_of(mcp["model_info"])]
    for text in offered:
        assert not PERIOD.search(text), PERIOD.search(text)
    assert {p.name for p in mcp["prompts"]} == {"continue_passage", "explain_phrase_sources"}
    assert "cloze set:" in text_of(mcp["model_info"]) and "probes" not in mcp["model_info"].structured_content["eval"]
    assert not mcp["search"].is_error

    meta = json.loads(ws.index_meta.read_text(encoding="utf-8"))
    assert set(meta["folding"].values()) == {"none"}  # search matches words as they are spelt
