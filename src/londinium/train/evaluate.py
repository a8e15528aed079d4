"""Validation during training: loss, perplexity and bits per byte.

Bits per byte is the tokenizer-independent number: two runs with different vocabularies predict the
same text, so the total information they need for it compares directly, while their per-token losses
do not. For the tokens evaluated,

    bpb = (sum of token NLL in nats) / (ln 2 x UTF-8 bytes of the text those tokens encode)

The bytes of an arbitrary window are not stored, so we use the shard's average, bytes per token =
meta text_bytes / meta tokens. The end-of-text separators between documents count as tokens with no
bytes of their own, so they lower bytes/token slightly and their NLL is charged to the text around
them -- the same convention as every run on the same corpus, which is what makes the number
comparable. With `eval_batches` limiting the windows, the figure is for a sample of the split.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from londinium.train import distributed
from londinium.device import Precision


@torch.no_grad()
def evaluate(model: torch.nn.Module, shard: Any, context: int, batch_size: int, max_batches: int | None,
             precision: Precision, d: distributed.Dist) -> dict[str, float]:
    """Mean validation loss over the (rank-sharded) eval windows, summed across processes.

    `model` must not be the DDP wrapper (its forward would expect a matching backward). The loss is
    plain cross-entropy computed here from the logits, so a mixture-of-experts router loss does not
    leak into the validation figure.
    """
    from londinium.data.loader import iter_eval_batches

    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=precision.device)  # [sum NLL, tokens]
    for x, y in iter_eval_batches(shard, context, batch_size, max_batches=max_batches, rank=d.rank, world_size=d.world_size):
        x = torch.as_tensor(x).to(precision.device, non_blocking=True)
        y = torch.as_tensor(y).to(precision.device, non_blocking=True)
        with precision.context():
            logits, _ = model(x, y)
        nll = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1).long(), ignore_index=-1, reduction="sum")
        totals[0] += nll.double()
        totals[1] += (y != -1).sum()
    distributed.all_reduce(totals, d)
    model.train(was_training)
    nll_sum, n = totals.tolist()
    if n == 0:
        return {"val_loss": float("nan"), "val_ppl": float("nan"), "val_bpb": float("nan"), "val_tokens": 0}
    loss = nll_sum / n
    meta = shard.meta
    bytes_per_token = meta["text_bytes"] / max(1, meta["tokens"])
    return {
        "val_loss": loss,
        "val_ppl": math.exp(min(loss, 50.0)),  # capped: an untrained model's exp(loss) overflows nothing useful
        "val_bpb": loss / (math.log(2) * bytes_per_token),
        "val_tokens": int(n),
    }
