"""How often a model's tool calls are whole and valid under the server's tool-call grammar.

    python benchmarks/tool_calls.py -w WORKSPACE --run RUN [--samples 64] [--max-tokens 200] [--quick]
    python benchmarks/tool_calls.py -w WORKSPACE --run RUN --task tool_search [--items 100] [--quick]

Each tool_choice (required, a named function, auto) is sampled `--samples` times (seeds 0..N-1,
temperature 1) through the engine with the grammar `/v1/chat/completions` builds, for two tool sets:
"bounded" (enums, integer ranges, short strings) and "search" (londinium mcp's search_corpus as it is
published: a free-text query). Per row: the share of replies that are whole calls, all valid against
their schemas; the share cut off by max_tokens (a valid prefix); invalid calls (always 0: the grammar
forbids them); text replies (auto only). The peer is no grammar at all: the same model with the tools
in its prompt, whose share of parseable, valid calls is printed beside it.

`--task tool_search` measures what a model learnt from tool-use SFT, on the task's held-out (test)
items, through a real `londinium serve` process and the `openai` client: each question is asked with
the task's `search_corpus` tool offered (tool_choice auto, then required; greedy); a whole call is
run against the corpus's search index (top hit, a snippet as long as the task's), its result sent
back as a tool message, and the model's next reply taken as its answer. Per tool_choice: the share of
questions answered by a whole, valid call of search_corpus (right tool); whose query finds the
question's document first; whose answer cites the result it got (names its title); both (the issue's
measure: a usable query, and an answer citing the passage it found); and whose answer names the
question's work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

BOUNDED = [
    {"type": "function", "function": {"name": "find_verse", "description": "Find a verse.", "parameters": {
        "type": "object", "required": ["book", "chapter"],
        "properties": {"book": {"enum": ["Genesis", "Psalms", "John"]}, "chapter": {"type": "integer", "minimum": 1, "maximum": 150},
                       "words": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 8}}}}}},
    {"type": "function", "function": {"name": "what_hour", "description": "The hour.", "parameters": {"type": "object", "properties": {}}}},
]
ANSWER_TOKENS = 40
SEARCH = [{"type": "function", "function": {"name": "search_corpus", "description": "Search the training corpus (BM25).", "parameters": {
    "type": "object", "required": ["query"],
    "properties": {"query": {"type": "string", "description": "Words to find."}, "k": {"type": "integer", "default": 10}}}}}]


def main() -> None:
    import jsonschema
    import torch

    from londinium.config import load_config
    from londinium.infer import SamplingParams
    from londinium.infer.chat_template import tokenize_chat
    from londinium.infer.engine import Engine
    from londinium.model.load import load_run
    from londinium.serve.protocol import ChatCompletionRequest
    from londinium.serve.tools import parse_calls, tool_plan
    from londinium.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--workspace", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="8 samples, 80 tokens: the test suite's check that it runs")
    ap.add_argument("--task", choices=["tool_search"], help="held-out items of this tool task, through the server")
    ap.add_argument("--items", type=int, default=100, help="--task: test items asked at most")
    a = ap.parse_args()
    if a.task:
        return held_out(a)
    samples, max_tokens = (8, 80) if a.quick else (a.samples, a.max_tokens)
    torch.set_num_threads(1)
    ws = Workspace(a.workspace)
    engine = Engine.from_trained(load_run(ws, run=a.run, device="cpu"), load_config().generate)
    end = engine.tokenizer.token_to_id("<|end|>")
    messages = [{"role": "user", "content": "Where is it written that the king went to the sea?"}]
    print(f"run {a.run}: {samples} samples per row, max_tokens {max_tokens}, temperature 1")
    print(f"{'tools':8} {'tool_choice':12} {'whole+valid':>11} {'cut off':>8} {'invalid':>8} {'text':>6} {'no grammar: valid':>18}")
    for label, tools in (("bounded", BOUNDED), ("search", SEARCH)):
        schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
        ids = tokenize_chat(engine.tokenizer, messages, tools=tools).ids
        first = tools[0]["function"]["name"]
        for choice in ("required", {"type": "function", "function": {"name": first}}, "auto"):
            req = ChatCompletionRequest(model="m", messages=messages, tools=tools, tool_choice=choice, parallel_tool_calls=False)
            plan = tool_plan(req, engine)
            counts = {"valid": 0, "cut": 0, "invalid": 0, "text": 0, "free_valid": 0}
            for constraint, free in ((plan.constraint, False), (None, True)):
                params = [SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=s, constraint=constraint, stop_token_ids=[end])
                          for s in range(samples)]
                for c in engine.generate([ids] * samples, params):
                    calls = parse_calls(c.text)
                    ok = bool(calls) and all(_valid(call, schemas, jsonschema) for call in calls)
                    if free:
                        counts["free_valid"] += ok
                    elif ok:
                        counts["valid"] += 1
                    elif calls:
                        counts["invalid"] += 1
                    elif c.finish_reason == "length" and c.text.startswith("<"):
                        counts["cut"] += 1
                    elif c.text.startswith("<") or choice != "auto":
                        counts["cut" if c.finish_reason == "length" else "invalid"] += 1
                    else:
                        counts["text"] += 1
            name = choice if isinstance(choice, str) else "named"
            print(f"{label:8} {name:12} {counts['valid'] / samples:>11.0%} {counts['cut'] / samples:>8.0%} "
                  f"{counts['invalid']:>8} {counts['text'] / samples:>6.0%} {counts['free_valid'] / samples:>18.0%}")
            assert counts["invalid"] == 0, "the grammar let an invalid call through"


def held_out(a: argparse.Namespace) -> None:
    """The `--task tool_search` measurement (see the module docstring)."""
    import jsonschema
    import openai
    from servers import free_port, start, stop

    from londinium.index.search import CorpusIndex, SearchError
    from londinium.tasks import tool_search
    from londinium.tasks.messages import task_items
    from londinium.workspace import Workspace

    ws = Workspace(a.workspace)
    items = task_items(ws, a.task, "test")[:4 if a.quick else a.items]
    index = CorpusIndex.load(ws, snippet_chars=tool_search.SNIPPET_CHARS)
    schemas = {tool_search.NAME: tool_search.TOOL["function"]["parameters"]}
    port = free_port()
    log = Path(a.workspace) / "bench" / "tool_calls_serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = start([sys.executable, "-m", "londinium", "serve", "-w", str(ws.root), "--run", a.run, "--port", str(port),
                  "--set", "serve.threads=1"], f"http://127.0.0.1:{port}", log, threads=1)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
        print(f"run {a.run}: {len(items)} held-out {a.task} items (test split), greedy, max_tokens {a.max_tokens}")
        print(f"{'tool_choice':12} {'called search_corpus':>21} {'query finds its doc':>20} {'answer cites result':>20} "
              f"{'both (the issue)':>17} {'answer right':>13}")
        for choice in ("auto", "required"):
            counts = {"call": 0, "found": 0, "cites": 0, "both": 0, "right": 0, "no room": 0}
            for item in items:
                asked = [{"role": "user", "content": tool_search.question(item.prompt.split("\n\n", 1)[0])}]
                first = client.chat.completions.create(model=a.run, messages=asked, tools=[tool_search.TOOL], tool_choice=choice,
                                                       parallel_tool_calls=False, temperature=0, max_tokens=a.max_tokens)
                calls = first.choices[0].message.tool_calls or []
                if not (len(calls) == 1 and _valid(calls[0].model_dump(), schemas, jsonschema)):
                    continue
                counts["call"] += 1
                try:
                    hits = index.search(json.loads(calls[0].function.arguments)["query"], k=1)
                    result = tool_search.result(hits[0].title, hits[0].source, hits[0].snippet) if hits else "no document matches"
                except SearchError as e:  # a query with no words: the tool's error is its result, as over MCP
                    hits, result = [], str(e)
                counts["found"] += bool(hits) and hits[0].id == item.doc_id
                try:  # the answer is a heading: ANSWER_TOKENS leave the result room in a 512-token context
                    answer = client.chat.completions.create(
                        model=a.run, temperature=0, max_tokens=ANSWER_TOKENS, tools=[tool_search.TOOL], tool_choice="auto",
                        messages=[*asked, {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
                                  {"role": "tool", "tool_call_id": calls[0].id, "content": result}]).choices[0].message.content or ""
                except openai.BadRequestError:  # the exchange does not fit the model's context: no answer
                    counts["no room"] += 1
                    continue
                cites = bool(hits) and hits[0].title.casefold() in answer.casefold()
                counts["cites"] += cites
                # What the issue asks: a usable query (it found the question's document) and an answer citing that passage.
                counts["both"] += cites and hits[0].id == item.doc_id
                counts["right"] += item.answer.removesuffix(f" ({item.source})").casefold() in answer.casefold()
            n = len(items)
            room = f"  ({counts['no room']} calls' results left no room to answer)" if counts["no room"] else ""
            print(f"{choice:12} {counts['call'] / n:>21.0%} {counts['found'] / n:>20.0%} {counts['cites'] / n:>20.0%} "
                  f"{counts['both'] / n:>17.0%} {counts['right'] / n:>13.0%}{room}")
    finally:
        stop(proc)


def _valid(call: dict, schemas: dict, jsonschema) -> bool:
    try:
        jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])
    except (jsonschema.ValidationError, KeyError, json.JSONDecodeError):
        return False
    return True


if __name__ == "__main__":
    main()
