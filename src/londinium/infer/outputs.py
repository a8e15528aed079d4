"""What the engine returns: completions, their choices, per-token log-probabilities, streamed deltas.

Plain dataclasses with `to_dict()` so the CLI's JSON output and the server (a later issue) share one
shape, close to the OpenAI completions API: a `Completion` per prompt holds `n` `Choice`s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TopLogprob:
    token_id: int
    token: str  # the token's bytes decoded on their own (a partial character shows as U+FFFD)
    logprob: float


@dataclass
class TokenLogprob:
    """The log-probability the model gave the chosen token, and its `k` most likely alternatives.

    These are the model's own probabilities (log-softmax of the raw logits), before temperature,
    top-k/p or penalties, as vLLM reports them: they measure what the model thinks, not the sampler.
    """

    token_id: int
    token: str
    logprob: float
    top: list[TopLogprob] = field(default_factory=list)


@dataclass
class Timing:
    prompt_tokens: int
    completion_tokens: int
    prefill_s: float  # from admission to the first token (the prompt's prefill, chunks and all)
    decode_s: float  # time from the first token to the last
    queue_s: float = 0.0  # waiting before admission (the server's queue; 0 when nothing else ran)

    @property
    def ttft_s(self) -> float:
        """Time to first token, from submission: waiting plus prefill."""
        return self.queue_s + self.prefill_s

    @property
    def decode_tokens_per_s(self) -> float:
        """Generated tokens (all samples of the prompt) per second of decode time; a rough rate, since
        the first token of each sequence comes with the prefill."""
        return self.completion_tokens / self.decode_s if self.decode_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "ttft_s": self.ttft_s, "decode_tokens_per_s": round(self.decode_tokens_per_s, 2)}


@dataclass
class Choice:
    index: int
    text: str  # stop strings and end-of-text are not part of it
    token_ids: list[int]  # every token generated, including a final end-of-text or stop token
    finish_reason: str  # "stop" (end-of-text, stop token or stop string), "length" (max_tokens) or "cancelled"
    cumulative_logprob: float  # sum of the model's log-probabilities of token_ids
    logprobs: list[TokenLogprob] | None = None

    @property
    def mean_logprob(self) -> float:
        return self.cumulative_logprob / max(1, len(self.token_ids))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean_logprob"] = self.mean_logprob
        return d


@dataclass
class Completion:
    """The result for one prompt: `choices` holds n sequences (best first when best_of or beams chose)."""

    prompt: str
    prompt_token_ids: list[int]
    choices: list[Choice]
    timing: Timing

    # The common case is n = 1: these read the first choice.
    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.choices[0].token_ids

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason

    @property
    def logprobs(self) -> list[TokenLogprob] | None:
        return self.choices[0].logprobs

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "prompt_token_ids": self.prompt_token_ids,
            "choices": [c.to_dict() for c in self.choices],
            "timing": self.timing.to_dict(),
        }


@dataclass
class TextDelta:
    """A piece of a streamed sequence: the tokens of one step and the text that became complete.

    `index` is the prompt's position in the request, `choice` the sample of that prompt. The last
    delta of a sequence has `finish_reason` set (its text may be empty)."""

    index: int
    choice: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
