"""Sliding-window perplexity: londinium's batched evaluation against the `transformers` guide's loop.

    .venv/bin/python benchmarks/eval_perplexity.py                   # 24 documents of ~1,000 tokens
    .venv/bin/python benchmarks/eval_perplexity.py --docs 48 --threads 1 --rounds 3

Same model, same weights, same token ids: a GPT-2 shaped model (4 layers, 4 heads, 256 wide,
context 256, vocabulary 8192) with random GPT-2 initialisation; the peer is
GPT2LMHeadModel with our weights copied over by `londinium.model.hf_layout` (logits checked first).

- ours: `londinium.eval.perplexity.evaluate_documents` -- windows of every document sorted by
  length and batched (`--batch` windows per forward pass), per-position NLL from one cross-entropy;
- peer: the loop of the `transformers` perplexity guide ("Perplexity of fixed-length models"):
  one window per forward pass, `labels` with -100 on the context, loss x scored tokens summed.

Both use stride = context / 2 and score every token of every document once, after
`<|endoftext|>`. The peer's windows start one token later than ours (it predicts inside the window,
we predict the token after it), so the two losses differ slightly; the unit tests prove ours equal
to the hand computation. Timed in alternating rounds in one process; figures are medians. The
machine may be shared: read the ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from peers import transformers_peer

from londinium.config import ModelConfig
from londinium.eval.perplexity import evaluate_documents
from londinium.model.gpt import GPT

SHAPE = dict(n_layer=4, n_head=4, n_embd=256, context=256, vocab_size=8192)
SENTENCES = [
    "Shall I compare thee to a summer's day?", "Thou art more lovely and more temperate.",
    "In the beginning God created the heaven and the earth.", "To be, or not to be: that is the question.",
    "Of Mans First Disobedience, and the Fruit Of that Forbidden Tree,", "The LORD is my shepherd; I shall not want.",
    "Now is the winter of our discontent Made glorious summer by this son of York;",
    "Friends, Romans, countrymen, lend me your ears;", "And God said, Let there be light: and there was light.",
]


def build() -> tuple[GPT, torch.nn.Module]:
    torch.manual_seed(0)
    ours = GPT(ModelConfig(**SHAPE)).eval()
    return ours, transformers_peer(ours)


def documents(n: int, seed: int = 0) -> tuple[list[dict], dict[str, list[int]]]:
    """`n` documents of ~4,000 characters and their token ids (a BPE trained on the sentences)."""
    from londinium.tokenizer.codec import encode_batch
    from londinium.tokenizer.train import train_bpe

    rng = random.Random(seed)
    tok = train_bpe(SENTENCES * 20, 2000, show_progress=False)
    docs = []
    for i in range(n):
        text = ""
        while len(text) < 4000:
            text += rng.choice(SENTENCES) + rng.choice([" ", "\n"])
        docs.append({"text": text, "source": "bench"})
    ids = encode_batch(tok, [d["text"] for d in docs])
    return docs, {d["text"]: x for d, x in zip(docs, ids)}


def peer_nll(peer: torch.nn.Module, ids: list[int], context: int, stride: int) -> tuple[float, int]:
    """The transformers guide's loop, with the scored tokens counted after the label shift."""
    seq = torch.tensor([ids])
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, seq.size(1), stride):
        end = min(begin + context, seq.size(1))
        trg_len = end - prev_end
        input_ids = seq[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        loss = peer(input_ids, labels=target_ids).loss
        scored = int((target_ids[:, 1:] != -100).sum())
        nll += float(loss) * scored
        count += scored
        prev_end = end
        if end == seq.size(1):
            break
    return nll, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8, help="windows per forward pass (ours)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.rounds, args.threads = 2, 1, args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, peer = build()
    docs, ids = documents(args.docs)
    context, stride = SHAPE["context"], SHAPE["context"] // 2
    n_tokens = sum(len(x) for x in ids.values())
    print(f"{args.docs} documents, {n_tokens:,} tokens, context {context}, stride {stride}, torch threads {torch.get_num_threads()}")

    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        r = evaluate_documents(ours, lambda texts: [ids[t] for t in texts], docs, 0, context, stride, args.batch, show_progress=False)
        times["ours"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.inference_mode():
            sums = [peer_nll(peer, [0, *ids[d["text"]]], context, stride) for d in docs]
        times["peer"].append(time.perf_counter() - t0)
    peer_total, peer_count = sum(s for s, _ in sums), sum(c for _, c in sums)
    assert peer_count == r["total"]["tokens"] == n_tokens
    ours_s, peer_s = statistics.median(times["ours"]), statistics.median(times["peer"])
    print(f"loss (nats/token): ours {r['total']['loss']:.5f}, transformers loop {peer_total / peer_count:.5f} (windows differ by one token)")
    print(f"{'':34} {'tokens/s':>10}")
    print(f"{'londinium evaluate_documents':34} {n_tokens / ours_s:10,.0f}")
    print(f"{'transformers guide loop':34} {n_tokens / peer_s:10,.0f}")
    print(f"ratio londinium / transformers: {peer_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
