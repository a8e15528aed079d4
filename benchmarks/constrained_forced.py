"""Constrained decoding: how many output tokens the grammar forces, i.e. the model passes that
llguidance's fast-forward tokens (`compute_ff_tokens`: what the grammar allows in one way only,
appended without sampling) would save.

    .venv/bin/python benchmarks/constrained_forced.py -w londinium-work --run main --samples 20

For a tool call under tool_choice "required" (the server's grammar, `serve/tools.py`, two tools) and an
application's JSON Schema, `--samples` outputs are decoded from the run's model after a chat prompt:
sampled (temperature 1, seeded) where the grammar leaves a choice, the forced tokens appended at
once where it does not. Printed: tokens, the forced share, and model passes with fast-forward (one
per sampled token, one per forced run of tokens, fed as a chunk) against one per token without. Not
a timing: whether a forced chunk costs the engine less than the steps it replaces is a separate
measurement (a step's fixed cost dominates a small model on CPU, so a chunk costs about one step).
"""

from __future__ import annotations

import argparse

import torch

from londinium.infer.constrain import Constraint, Grammars
from londinium.model.load import load_run
from londinium.serve.tools import _grammar
from londinium.workspace import Workspace

TOOLS = [{"name": "search_corpus", "parameters": {"type": "object", "properties": {
             "query": {"type": "string"}, "k": {"type": "integer"}}, "required": ["query"]}},
         {"name": "final_answer", "parameters": {"type": "object", "properties": {
             "answer": {"type": "string"}}, "required": ["answer"]}}]
APP_SCHEMA = {  # as benchmarks/constrained_decode.py compiles
    "type": "object", "additionalProperties": False, "required": ["speaker", "act", "lines"],
    "properties": {"speaker": {"enum": ["HAMLET", "OPHELIA", "GHOST"]}, "act": {"type": "integer", "minimum": 1, "maximum": 5},
                   "lines": {"type": "array", "items": {"type": "string"}}}}


@torch.no_grad()
def decode(model, grammars: Grammars, constraint: Constraint, prompt: list[int], eos: int, max_new: int) -> tuple[int, int, int]:
    """(tokens, forced tokens, model passes with fast-forward) of one sampled output."""
    matcher, ids = grammars.matcher(constraint), list(prompt)
    tokens = forced = passes = 0
    while tokens < max_new and not matcher.is_stopped():
        ff = matcher.compute_ff_tokens()
        if ff:
            assert matcher.consume_tokens(ff) is not False
            ids += ff
            tokens, forced, passes = tokens + len(ff), forced + len(ff), passes + 1
            continue
        logits = grammars.mask(model(torch.tensor([ids[-model.config.context:]]))[0][:, -1], [0], [matcher])
        token = int(torch.multinomial(torch.softmax(logits, -1), 1))
        if token == eos:
            break
        assert matcher.consume_token(token)
        ids.append(token)
        tokens, passes = tokens + 1, passes + 1
    return tokens, forced, passes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-w", "--workspace", default="londinium-work")
    ap.add_argument("--run", default="main")
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--max-new", type=int, default=120)
    ap.add_argument("--quick", action="store_true", help="2 samples of at most 16 tokens: that the script runs")
    a = ap.parse_args()
    if a.quick:
        a.samples, a.max_new = 2, 16
    torch.set_num_threads(1)
    trained = load_run(Workspace(a.workspace), a.run, a.checkpoint)
    model, tok = trained.model, trained.tokenizer
    eos = tok.token_to_id("<|endoftext|>")
    grammars = Grammars(tok, model.config.vocab_size, eos)
    prompt = tok.encode("<|user|>\nWho hath gone to the sea?<|end|>\n<|assistant|>\n").ids
    cases = {"tool call (required, 2 tools)": Constraint.lark(_grammar(TOOLS, free_text=False, parallel=False)),
             "application JSON Schema": Constraint.json_schema(APP_SCHEMA)}
    for name, constraint in cases.items():
        tokens = forced = passes = 0
        for seed in range(a.samples):
            torch.manual_seed(seed)
            t, f, p = decode(model, grammars, constraint, prompt, eos, a.max_new)
            tokens, forced, passes = tokens + t, forced + f, passes + p
        print(f"{name}: {tokens} tokens in {a.samples} samples, forced {forced} ({100 * forced / max(1, tokens):.0f}%); "
              f"model passes with fast-forward {passes} against {tokens} without")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
