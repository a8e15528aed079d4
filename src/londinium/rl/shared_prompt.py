"""The answers' log-probabilities with each group's prompt run once: the policy loss's forward pass.

    logp, entropy, mask = answer_logprobs(model, x, y, group_size, temperature, pad_id)   # each [B, A]

A rollout's G samples of a prompt share that prompt, and the prompt is most of each row (~40 of ~45
tokens on `arith`). Run over whole rows, the forward and backward passes spend most of a step on G
identical copies of it. Here each group's prompt goes through the model once (left-padded to the
longest, as `KVCache.pad` runs rows), its keys and values are repeated G times, and the G answers
continue from them; the gradient of every answer flows back into the one prompt computation (the
repeat sums it). The log-probabilities are those of the whole-row pass up to float rounding (tested
against it, with their gradients); only the order of additions differs.

Rows come as the rollout builds them (`Rollouts._tensors`): x = prompt + answer without its last
token, right-padded; y = the answer's tokens where they are predicted, -1 elsewhere; rows g*G ..
g*G + G-1 are the samples of prompt g. Outputs are in answer form: column j is answer token j.
"""

from __future__ import annotations

from typing import Any

import torch

from londinium.model.cache import KVCache
from londinium.rl.loss import token_logprobs


class PrefixKV(KVCache):
    """A KV cache that concatenates keys and values instead of writing them into preallocated buffers,
    so gradients flow through it (an in-place write would overwrite tensors autograd saved), with
    left-padded rows (`pad`, as KVCache runs them); `repeat(G)` gives each row to G continuations."""

    def __init__(self, n_layer: int, max_len: int, pad: torch.Tensor):
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer
        self.max_len, self.length, self.pad = max_len, 0, pad

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        past_k, past_v = self.k[layer], self.v[layer]
        if past_k is not None and past_v is not None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def repeat(self, times: int) -> None:
        """Each row becomes `times` consecutive rows (the gradient of the copies is summed into it)."""
        self.k = [None if t is None else t.repeat_interleave(times, dim=0) for t in self.k]
        self.v = [None if t is None else t.repeat_interleave(times, dim=0) for t in self.v]
        self.pad = self.pad.repeat_interleave(times)


def split_rows(x: torch.Tensor, y: torch.Tensor, group_size: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompts [P, L] left-padded with pad_id, their padding [P], answers [B, A] right-padded with -1)
    from a rollout's rows."""
    answered = y != -1
    n = answered.sum(dim=1)
    if bool((n == 0).any()):
        raise ValueError("every sample of a rollout needs at least one answer token")
    first = answered.int().argmax(dim=1)  # where each answer's first token is predicted: len(prompt) - 1
    lengths = (first + 1).view(-1, group_size)
    if bool((lengths != lengths[:, :1]).any()):
        raise ValueError(f"rows of a group must share their prompt (groups of {group_size} consecutive rows)")
    lengths = lengths[:, 0]
    longest = int(lengths.max())
    pad = longest - lengths
    prompts = torch.full((lengths.numel(), longest), pad_id, dtype=x.dtype, device=x.device)
    for g, (length, p) in enumerate(zip(lengths.tolist(), pad.tolist())):
        rows = x[g * group_size:(g + 1) * group_size, :length]
        if bool((rows != rows[:1]).any()):
            raise ValueError(f"rows of a group must share their prompt (groups of {group_size} consecutive rows)")
        prompts[g, p:] = rows[0]
    index, real = _answer_columns(y)
    return prompts, pad, y.gather(1, index).masked_fill(~real, -1)


def answer_form(t: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor | None:
    """Per-token values `[B, T]` laid out as the rows `y` (zeros off the answers) in answer form `[B, A]`;
    a tensor already in answer form (or None) as it is."""
    if t is None or t.size(1) != y.size(1):
        return t
    index, real = _answer_columns(y)
    return t.gather(1, index) * real


def _answer_columns(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For answer form `[B, A]`: the column of `y` that holds answer token j of row b, and whether it is one."""
    answered = y != -1
    n, first = answered.sum(dim=1), answered.int().argmax(dim=1)
    cols = torch.arange(int(n.max()), device=y.device)
    return (first[:, None] + cols).clamp(max=y.size(1) - 1), cols[None, :] < n[:, None]


def answer_logprobs(model: torch.nn.Module, raw: Any, x: torch.Tensor, y: torch.Tensor, group_size: int,
                    temperature: float, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """([B, A] log-probabilities of the sampled answer tokens under softmax(logits / temperature),
    [B, A] entropies, [B, A] mask of real answer tokens), each group's prompt run once through `model`
    (`raw`, the unwrapped GPT, gives the config and the mixture of experts' router loss)."""
    device = next(raw.parameters()).device
    prompts, pad, answers = split_rows(x, y, group_size, pad_id)
    prompts, pad, answers = prompts.to(device), pad.to(device), answers.to(device)
    cache = PrefixKV(raw.config.n_layer, raw.config.context, pad)
    # The prompt's last position predicts each answer's first token: one row of logits per group.
    head, _ = model(prompts, kv_cache=cache, logits_to_keep=1)
    aux = [raw.last_aux_loss]
    rows = [head[:, 0].repeat_interleave(group_size, dim=0)]
    targets = [answers[:, 0]]
    later = answers[:, 1:] != -1  # answer tokens after the first, predicted by the one before
    if bool(later.any()):
        cache.repeat(group_size)
        inputs = answers[:, :-1]
        rest, _ = model(torch.where(inputs >= 0, inputs, pad_id), kv_cache=cache, keep=later)
        aux.append(raw.last_aux_loss)
        rows.append(rest)
        targets.append(answers[:, 1:][later])
    if aux[0] is not None:  # a mixture of experts: the router loss of both passes
        raw.last_aux_loss = torch.stack(aux).mean()
    logp_flat, entropy_flat = token_logprobs(torch.cat(rows), torch.cat(targets), temperature)
    # Back into answer form: column 0 from the prompts' rows, the later columns where `later` marks.
    B, blank = answers.size(0), torch.zeros(answers.size(0), answers.size(1) - 1, device=device)
    logp = torch.cat([logp_flat[:B, None], blank.masked_scatter(later, logp_flat[B:])], dim=1)
    entropy = torch.cat([entropy_flat[:B, None], blank.masked_scatter(later, entropy_flat[B:])], dim=1)
    return logp, entropy, answers != -1
