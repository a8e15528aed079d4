"""A generated tool-use task: find where words come from by calling `search_corpus`, then cite it.

    user       Which work has these words? "And the LORD spake unto Moses"
    assistant  <tool_call>{"name":"search_corpus","arguments":{"query":"And the LORD spake unto Moses"}}</tool_call>
    tool       Numbers 3 (kjv)
               ... the tribe of Levi near. And the LORD spake unto Moses, saying, Behold, I have taken ...
    assistant  Numbers 3 (kjv)

The item's phrase is one line (4 to 10 words) of a document of the item's split, so val and test
items ask only about val and test documents (whose groups are not in train). The tool's result is a
real passage of that document: its title and source, then the text around the phrase, at most
`SNIPPET_CHARS` characters, as the search index cuts a snippet around what matched (the same search
through `londinium mcp` or the index, with `snippet_chars` set to it, returns this shape). The
answer is the result's heading, the title and source it cites; `check` scores it exactly.

An item keeps both in its prompt, the phrase on the first line and the passage after a blank line
(`prompt_start` is -1: the prompt is not one slice of the document). The conversation offers one
tool, `TOOL`, short enough that the whole exchange fits the tiny preset's 256-token context (the
MCP server publishes search_corpus with more options, which a tiny model's context cannot hold).
"""

from __future__ import annotations

import json
import random
from typing import Any

from londinium.tasks.cut import TaskSpec, lines, spread
from londinium.tasks.items import TaskItem

NAME = "search_corpus"
TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": NAME, "description": "Search the corpus.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}
SNIPPET_CHARS = 120  # the passage in a result: enough to read the phrase in place, short enough to fit
PHRASE_WORDS = (4, 10)
QUESTION = "Which work has these words?"


def cut_tool_search(corpus: Any, spec: TaskSpec) -> list[TaskItem]:
    """A phrase (one line) of a document of `spec.split`, the passage around it, and the document's
    title and source; documents without a title are skipped."""

    def one(doc: dict, rng: random.Random, _round: int) -> TaskItem | None:
        text, title = doc.get("text", ""), " ".join(str(doc.get("title") or "").split())
        fits = [(s, e) for s, e in lines(text) if PHRASE_WORDS[0] <= len(text[s:e].split()) <= PHRASE_WORDS[1]
                and len(text[s:e]) < SNIPPET_CHARS and '"' not in text[s:e]]
        if not title or not fits:
            return None
        start, end = rng.choice(fits)
        phrase = " ".join(text[start:end].split())
        return TaskItem(id="", task="tool_search", split=spec.split, prompt=f"{phrase}\n\n{snippet(text, start, end)}",
                        answer=heading(title, str(doc.get("source") or "")), doc_id=str(doc.get("id", "")),
                        source=str(doc.get("source") or ""), group=str(doc.get("group") or ""), start=end, end=end)

    return spread(corpus.get(spec.split, ()), spec, "tool_search", one)


def snippet(text: str, start: int, end: int, width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` around `text[start:end]`, whole words, on one line."""
    room = max(0, width - (end - start)) // 2
    begin, stop = max(0, start - room), min(len(text), end + room)
    while begin > 0 and not text[begin - 1].isspace():  # whole words: step inwards to a space
        begin += 1
    while stop < len(text) and not text[stop].isspace():
        stop -= 1
    return " ".join(text[begin:stop].split())


def heading(title: str, source: str) -> str:
    """What a result is cited by: the document's title and its source."""
    return f"{title} ({source})" if source else title


def result(title: str, source: str, passage: str) -> str:
    """The tool's answer as the model reads it: the heading, then the passage on one line."""
    return f"{heading(title, source)}\n{' '.join(passage.split())}"


def messages(item: TaskItem) -> list[dict[str, Any]]:
    """The whole exchange: the question, the call, the tool's result and the answer citing it."""
    phrase, passage = item.prompt.split("\n\n", 1)
    title = item.answer.removesuffix(f" ({item.source})") if item.source else item.answer
    call = {"id": "call_1", "type": "function", "function": {
        "name": NAME, "arguments": json.dumps({"query": phrase}, ensure_ascii=False, separators=(",", ":"))}}
    return [{"role": "user", "content": question(phrase)},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": result(title, item.source, passage)},
            {"role": "assistant", "content": item.answer}]


def question(phrase: str) -> str:
    return f'{QUESTION} "{phrase}"'
