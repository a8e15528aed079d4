"""What the engine tracks per request: the request, its samples (one running sequence each), and
what a step tells about it; how a sequence takes its next token, and the completion at the end.

A sequence's text is decoded a token at a time from bytes (`text.py`), its stop strings and stop
tokens are checked as each token comes, and its grammar (`constrain.py`) advances with it, so
nothing here grows with the length of the output.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import torch

from londinium.errors import LondiniumError
from londinium.infer.constrain import advance as advance_grammar
from londinium.infer.outputs import Choice, Completion, TextDelta, Timing, TokenLogprob, TopLogprob
from londinium.infer.sampling import SamplingParams
from londinium.infer.text import TextStream

Prompt = Union[str, Sequence[int]]


class PromptError(LondiniumError):
    """A prompt cannot be generated from: too long for the model's context, or invalid token ids."""


class EngineRequestError(LondiniumError):
    """The engine failed on one request; the others go on. `request_id` names it, `__cause__` is why."""

    def __init__(self, request_id: str, message: str):
        super().__init__(f"request {request_id} failed in the engine: {message}")
        self.request_id = request_id


@dataclass(eq=False)
class RunningSequence:
    """One sequence being decoded: a sample of a request."""

    request: Request
    choice: int
    params: SamplingParams
    stream: TextStream
    stop_ids: frozenset[int]
    generator: torch.Generator | None
    ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    cumulative: float = 0.0
    finish_reason: str | None = None
    first_token_at: float = 0.0
    finished_at: float = 0.0
    matcher: Any = None  # the grammar's state (`infer/constrain.py`) when params.constraint is set


_keys = itertools.count()


@dataclass(eq=False)
class Request:
    """A prompt and its sampling parameters, as the scheduler tracks it from queue to completion.

    `index` labels its deltas (the prompt's position in a `stream_batch` call); `id` names it in errors."""

    prompt_ids: list[int]
    params: SamplingParams
    prompt: str = ""
    index: int = 0
    id: str = ""
    submitted_at: float = field(default_factory=time.perf_counter)
    key: int = field(default_factory=lambda: next(_keys))
    cancelled: bool = False
    seqs: list[RunningSequence] = field(default_factory=list)
    admitted_at: float = 0.0
    prefill: Any = None  # the prompt's own `KVCache` while it is prefilled
    done: bool = False

    def __post_init__(self) -> None:
        self.id = self.id or f"request {self.key}"


@dataclass
class StepEvent:
    """What one step did for one request: its new deltas, and its completion or error once it ended."""

    request: Request
    deltas: list[TextDelta] = field(default_factory=list)
    completion: Completion | None = None
    error: BaseException | None = None


def advance(token_text: Callable[[int], str], s: RunningSequence, token: int, logprob: float,
            top_values: list[float] | None, top_ids: list[int] | None, now: float) -> TextDelta:
    """Sequence `s` takes `token` (its log-probability, and the alternatives asked for): its text so
    far in whole characters, and its finish reason once a stop token, stop string, the grammar's end
    or max_tokens ends it."""
    s.ids.append(token)
    s.cumulative += logprob
    entry = None
    if s.logprobs is not None:
        k = s.params.logprobs or 0
        alternatives = [TopLogprob(i, token_text(i), v) for v, i in zip((top_values or [])[:k], (top_ids or [])[:k])]
        entry = TokenLogprob(token, token_text(token), logprob, alternatives)
        s.logprobs.append(entry)
    if token in s.stop_ids:
        text, s.finish_reason = s.stream.finish(), "stop"
    else:
        complete = s.matcher is not None and advance_grammar(s.matcher, token, s.params.constraint)
        text, stopped = s.stream.push(token)
        if stopped or complete:  # complete: the grammar admits nothing more, so the text is whole
            text += s.stream.finish()
            s.finish_reason = "stop"
        elif len(s.ids) >= s.params.max_tokens:
            text += s.stream.finish()
            s.finish_reason = "length"
    if s.finish_reason is not None:
        s.finished_at = now
    return TextDelta(s.request.index, s.choice, text, [token], [entry] if entry else None, s.finish_reason)


def completion_of(r: Request) -> Completion:
    """The completion of a request whose sequences have all ended: its choices (best_of's chosen)
    and its timing."""
    params, seqs = r.params, r.seqs
    choices = [Choice(s.choice, s.stream.text, s.ids, s.finish_reason or "length", s.cumulative, s.logprobs)
               for s in sorted(seqs, key=lambda s: s.choice)]
    if params.best_of is not None and params.best_of > params.n:
        # best_of: the n samples the model finds most likely per token (mean, so length does not decide).
        choices = sorted(choices, key=lambda c: c.mean_logprob, reverse=True)[:params.n]
        for i, c in enumerate(choices):
            c.index = i
    started = [s.first_token_at for s in seqs if s.ids]
    first = min(started) if started else 0.0
    admitted = r.admitted_at or r.submitted_at
    prefill_s = (first - admitted) if started else 0.0
    timing = Timing(len(r.prompt_ids), sum(len(s.ids) for s in seqs), prefill_s,
                    (max(s.finished_at for s in seqs) - first) if started else 0.0,
                    queue_s=admitted - r.submitted_at)
    return Completion(r.prompt, r.prompt_ids, choices, timing)


def cancelled_completion(prompt_ids: list[int], params: SamplingParams) -> Completion:
    """The completion of a request cancelled before it ran: every choice empty, 'cancelled'."""
    choices = [Choice(i, "", [], "cancelled", 0.0, [] if params.logprobs is not None else None) for i in range(params.n)]
    return Completion("", prompt_ids, choices, Timing(len(prompt_ids), 0, 0.0, 0.0))
