"""Serving a rotary model past its trained context: bits per byte of held-out windows under each scaling.

    .venv/bin/python benchmarks/rope_context.py -w londinium-work --run main
    .venv/bin/python benchmarks/rope_context.py -w WS --run main --contexts 1024 4096 --windows 256 512 1024 2048 4096

For every served context N (`londinium serve --context N`) and rotary scaling (`serve.rope_scaling`:
none, linear, ntk; `model.gpt.rope_tables`), the run's model is given N positions by
`GPT.extend_context` and scores the validation shard cut into non-overlapping windows of W <= N
tokens, every position of each window scored: bits per byte over the same tokens for every N and
scaling. Beside them, the trained model's own sliding window (its context, stride half of it) over the
same tokens: what the served model must beat, or lose little against, for its extra context to be
worth having. `--bands` also splits the longest window's figure by position (0-trained, then
doubling), which shows where the loss comes from.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

from londinium.eval.perplexity import score_rows, sliding_windows
from londinium.infer.text import token_bytes_table
from londinium.model.gpt import ROPE_SCALINGS
from londinium.model.load import load_run
from londinium.workspace import Workspace


def windows(ids: np.ndarray, width: int, limit: int) -> list[tuple[list[int], list[int]]]:
    """Non-overlapping rows of `width` inputs, every target scored, at most `limit` rows."""
    rows = []
    for start in range(0, len(ids) - width - 1, width):
        chunk = ids[start:start + width + 1].tolist()
        rows.append((chunk[:-1], chunk[1:]))
        if len(rows) == limit:
            break
    return rows


def bits_per_byte(nll: list[torch.Tensor], rows: list, nbytes: np.ndarray, lo: int = 0, hi: int | None = None) -> float:
    """Bits per byte of the targets at positions lo..hi of every row."""
    nats = sum(float(t[lo:hi].sum()) for t in nll)
    size = sum(int(nbytes[np.asarray(r[1][lo:hi])].sum()) for r in rows)
    return nats / math.log(2) / size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--workspace", default="londinium-work")
    ap.add_argument("--run", default="main")
    ap.add_argument("--checkpoint", default="best", help="'best', 'latest' or a checkpoint directory")
    ap.add_argument("--contexts", type=int, nargs="+", default=[512, 1024, 2048, 4096], help="served contexts N")
    ap.add_argument("--windows", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096], help="window lengths W")
    ap.add_argument("--tokens", type=int, default=65536, help="validation tokens scored per window length (at most)")
    ap.add_argument("--scalings", nargs="+", default=list(ROPE_SCALINGS), choices=ROPE_SCALINGS)
    ap.add_argument("--bands", action="store_true", help="split the longest window by position")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="toy sizes: two contexts, two windows, 4 windows each")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ws = Workspace(a.workspace)
    trained = load_run(ws, a.run, a.checkpoint)
    model, trained_ctx = trained.model, trained.model.config.context
    if model.config.positions != "rope":
        sys.exit(f"run {a.run} has learned positions: it cannot serve past {trained_ctx}")
    if a.quick:
        a.contexts, a.windows, a.tokens = [2 * trained_ctx, 4 * trained_ctx], [trained_ctx, 4 * trained_ctx], 16 * trained_ctx
    ids = np.fromfile(ws.shard_bin("val"), dtype=np.uint16 if trained.config.model.vocab_size <= 65536 else np.uint32)
    nbytes = np.array([len(b) for b in token_bytes_table(trained.tokenizer)] + [0] * model.config.vocab_size)
    nbytes[list(trained.tokenizer.get_added_tokens_decoder())] = 0  # control tokens (<|endoftext|>) are no text
    print(f"run {a.run}: trained context {trained_ctx}, {len(ids):,} validation tokens; bits per byte, every window "
          f"position scored, {a.tokens:,} tokens per window length at most")
    header = ["served", "scaling"] + [f"W={w}" for w in a.windows]
    print(" | ".join(header))
    # the reference: the trained model sliding its own context over the same tokens as each W
    ref = []
    for w in a.windows:
        rows = windows(ids, w, max(1, a.tokens // w))
        flat = [rows[0][0][0]] + [t for r in rows for t in r[1]]
        slide = sliding_windows(flat, trained_ctx, trained_ctx // 2)
        ref.append(bits_per_byte(score_rows(model, slide, batch_size=8), slide, nbytes))
    print(" | ".join([f"{trained_ctx} (trained)", "sliding"] + [f"{b:.4f}" for b in ref]))
    for n in a.contexts:
        for scaling in a.scalings:
            model.extend_context(n, scaling)
            cells, banded = [], None
            for w in a.windows:
                if w > n:
                    cells.append("-")
                    continue
                rows = windows(ids, w, max(1, a.tokens // w))
                nll = score_rows(model, rows, batch_size=max(1, 8192 // w))
                cells.append(f"{bits_per_byte(nll, rows, nbytes):.4f}")
                banded = (w, rows, nll)
            print(" | ".join([str(n), scaling] + cells), flush=True)
            if a.bands and banded:
                w, rows, nll = banded
                edges = [0, trained_ctx]
                while edges[-1] < w:
                    edges.append(min(w, 2 * edges[-1]))
                print("    by position at W=%d: " % w + ", ".join(
                    f"{lo}-{hi - 1}: {bits_per_byte(nll, rows, nbytes, lo, hi):.4f}" for lo, hi in zip(edges, edges[1:])))
    model.extend_context(trained_ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
