"""The flags of `londinium generate` and `londinium chat`, and how they become SamplingParams.

Every sampling flag defaults to the `[generate]` config section, so `--set generate.temperature=0.7`
and `--temperature 0.7` do the same thing; the flag wins when both are given. This module imports
no torch, so building the CLI's parser stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from londinium.config import WEIGHT_DTYPES, Config
from londinium.errors import LondiniumError

if TYPE_CHECKING:
    from londinium.infer.sampling import SamplingParams

# flag -> (SamplingParams field, type, help); defaults come from the [generate] section.
_SAMPLING_FLAGS: dict[str, tuple[str, type, str]] = {
    "--max-tokens": ("max_tokens", int, "tokens to generate at most"),
    "--temperature": ("temperature", float, "sampling temperature; 0 is greedy"),
    "--top-k": ("top_k", int, "keep the k most likely tokens (0: off)"),
    "--top-p": ("top_p", float, "keep the smallest set of tokens whose probability reaches p (1: off)"),
    "--min-p": ("min_p", float, "keep tokens at least min_p times as likely as the top one (0: off)"),
    "--repetition-penalty": ("repetition_penalty", float, "transformers' repetition penalty on tokens already seen (1: off)"),
    "--frequency-penalty": ("frequency_penalty", float, "OpenAI frequency penalty, -2..2"),
    "--presence-penalty": ("presence_penalty", float, "OpenAI presence penalty, -2..2"),
    "--no-repeat-ngram": ("no_repeat_ngram_size", int, "never repeat an n-gram of this size (0: off)"),
    "--seed": ("seed", int, "seed for reproducible sampling (negative: a fresh one)"),
}


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--run", default=None, metavar="NAME", help="training run to load (default: generate.run, else train.run_name)")
    g.add_argument("--checkpoint", default=None, help="'best', 'latest' or a checkpoint directory (default: generate.checkpoint)")
    g.add_argument("--device", default=None, help="torch device: cpu, cuda, auto (default: generate.device)")
    g.add_argument("--weight-dtype", default=None, choices=WEIGHT_DTYPES,
                   help="the linear layers' weights: float32, float16 or int8 (CPU; default: generate.weight_dtype)")
    g.add_argument("--draft", default=None, metavar="RUN",
                   help="speculative decoding: a smaller run of this workspace proposes tokens (default: generate.draft_run)")
    g.add_argument("--context", type=int, default=None, metavar="N",
                   help="N tokens of context, past the trained one for rotary models, with a warning "
                        "(as `londinium serve --context`; default: as trained)")


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (defaults: the [generate] config section)")
    for flag, (_, tp, help) in _SAMPLING_FLAGS.items():
        g.add_argument(flag, type=tp, default=None, help=help)
    g.add_argument("--greedy", action="store_true", help="always take the most likely token (temperature 0)")
    g.add_argument("--stop", action="append", default=None, metavar="TEXT", help="stop before this text (repeatable)")
    g.add_argument("--stop-token-id", action="append", type=int, default=[], metavar="ID", help="stop at this token id (repeatable)")
    g.add_argument("--logit-bias", action="append", default=[], metavar="ID=BIAS", help="add BIAS (-100..100) to token ID's logit (repeatable)")
    g.add_argument("--ignore-eos", action="store_true", help="keep going past end-of-text")
    g.add_argument("--truncate", action="store_true", help="drop tokens from the left of a prompt that does not fit the context")


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="a prompt (repeatable); an empty string starts from scratch")
    src.add_argument("--prompts-file", type=Path, metavar="FILE", help="one prompt per line; or .jsonl with a string or {\"prompt\": ...} per line")
    add_model_arguments(p)
    add_sampling_arguments(p)
    g = p.add_argument_group("outputs")
    g.add_argument("--n", type=int, default=1, help="completions per prompt")
    g.add_argument("--best-of", type=int, default=None, help="sample this many, return the n with the highest mean log-probability")
    g.add_argument("--logprobs", type=int, default=None, metavar="K", help="report each token's log-probability and its K top alternatives")
    g.add_argument("--beams", type=int, default=1, help="beam search with this many beams (deterministic)")
    g.add_argument("--length-penalty", type=float, default=1.0, help="beam search: score = log-prob sum / length ** this")
    g.add_argument("--format", choices=("text", "json"), default="text", help="text, or one JSON object per prompt (text, tokens, log-probabilities, timing)")


def _logit_bias(items: list[str]) -> dict[int, float]:
    bias: dict[int, float] = {}
    for item in items:
        token, sep, value = item.partition("=")
        try:
            bias[int(token)] = float(value)
        except ValueError:
            raise LondiniumError(f"--logit-bias {item!r}: expected TOKEN_ID=BIAS, e.g. --logit-bias 0=-100") from None
        if not sep:
            raise LondiniumError(f"--logit-bias {item!r}: expected TOKEN_ID=BIAS, e.g. --logit-bias 0=-100")
    return bias


def sampling_params(cfg: Config, args: argparse.Namespace) -> SamplingParams:
    """SamplingParams from the [generate] section (`SamplingParams.from_config`), overridden by the
    flags that were given."""
    from londinium.infer.sampling import SamplingParams

    values: dict[str, Any] = {}
    for flag, (name, _, _) in _SAMPLING_FLAGS.items():
        given = getattr(args, flag[2:].replace("-", "_"))
        if given is not None:
            values[name] = given
    if values.get("seed") is not None and values["seed"] < 0:
        values["seed"] = None
    if args.greedy:
        values["temperature"] = 0.0
    if args.stop is not None:
        values["stop"] = args.stop
    values.update(stop_token_ids=args.stop_token_id, logit_bias=_logit_bias(args.logit_bias),
                  ignore_eos=args.ignore_eos, truncate=args.truncate)
    for name in ("n", "best_of", "logprobs", "length_penalty"):
        if hasattr(args, name):
            values[name] = getattr(args, name)
    if hasattr(args, "beams"):
        values["num_beams"] = args.beams
    return SamplingParams.from_config(cfg.generate, **values)
