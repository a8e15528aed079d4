"""Generation quality: samples at several temperatures for the held-out prompts, and their metrics.

Samples come from `londinium.infer.engine.Engine` (the same decoding path as `generate` and the
server). Each metric is also computed on the held-out reference text itself, the peer a sample
should resemble: a model that writes like its corpus has a period-vocabulary share and a
distinct-n close to the reference row, and no anachronisms (the reference row checks the list).
BLEU and ROUGE compare the first sample of each prompt, cut to the reference's length in words,
with the words that really followed the prompt.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from londinium.eval.heldout import HeldOut
from londinium.eval.text_metrics import (
    bleu,
    distinct_n,
    find_anachronisms,
    first_words,
    mean_repetition,
    period_share,
    rouge,
    words,
)


def generate_samples(
    engine: Any,
    encode: Callable[[str], list[int]],
    prompts: Sequence[HeldOut],
    temperatures: Sequence[float],
    samples_per_prompt: int,
    max_new_tokens: int,
    bos_id: int,
    seed: int = 1337,
) -> list[dict[str, Any]]:
    """Rows {temperature, prompt_id, sample, text}: `samples_per_prompt` per prompt and temperature
    (one at temperature 0, which is greedy). Each prompt starts after `<|endoftext|>`, as a document did
    in training, and is cut from the left if it does not fit the context with the new tokens."""
    from londinium.infer.sampling import SamplingParams, sample_seed

    ids = [[bos_id, *encode(p.prompt)] for p in prompts]
    rows: list[dict[str, Any]] = []
    for t in temperatures:
        n = 1 if t == 0 else samples_per_prompt
        # A seed per prompt: with one seed for all, every prompt would draw the same random numbers
        # and its samples would share noise (with a near-uniform model, the very same tokens).
        params = [SamplingParams(max_tokens=max_new_tokens, temperature=float(t), n=n, seed=sample_seed(seed, i), truncate=True)
                  for i in range(len(prompts))]
        for p, completion in zip(prompts, engine.generate(ids, params)):
            for k, choice in enumerate(completion.choices):
                rows.append({"temperature": float(t), "prompt_id": p.id, "sample": k, "text": choice.text})
    return rows


def text_block(texts: Sequence[str], period_words: Sequence[str], anachronisms: Sequence[str]) -> dict[str, Any]:
    """Metrics of a set of texts that need no reference: diversity, repetition, and -- only when
    there is a word list for them -- period words and anachronisms (an empty list leaves them out)."""
    n_words = sum(len(words(t)) for t in texts)
    block = {
        "texts": len(texts),
        "mean_words": n_words / len(texts) if texts else 0.0,
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "rep_4": mean_repetition(texts, 4),
    }
    if period_words:
        block["period_share"] = period_share(texts, period_words)
    if anachronisms:
        found = find_anachronisms(texts, anachronisms)
        block.update(anachronisms=sum(found.values()), anachronism_words=dict(found.most_common()))
    return block


def generation_metrics(
    samples: Sequence[dict[str, Any]],
    prompts: Sequence[HeldOut],
    period_words: Sequence[str],
    anachronisms: Sequence[str],
    reference_words: int,
) -> dict[str, dict[str, Any]]:
    """{"reference": metrics of the held-out text, "<temperature>": metrics of its samples + BLEU/ROUGE}."""
    out: dict[str, dict[str, Any]] = {"reference": text_block([p.reference for p in prompts], period_words, anachronisms)}
    refs = {p.id: p.reference for p in prompts}
    for t in sorted({s["temperature"] for s in samples}):
        rows = [s for s in samples if s["temperature"] == t]
        block = text_block([s["text"] for s in rows], period_words, anachronisms)
        firsts = [s for s in rows if s["sample"] == 0 and s["prompt_id"] in refs]
        hyps = [first_words(s["text"], reference_words) for s in firsts]
        gold = [refs[s["prompt_id"]] for s in firsts]
        block["bleu"] = bleu(hyps, gold)
        block.update(rouge(hyps, gold))
        out[f"{t:g}"] = block
    return out
