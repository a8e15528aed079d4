"""The engine's per-token log-probabilities in the two shapes OpenAI uses.

Completions: parallel lists (`tokens`, `token_logprobs`, `top_logprobs` as {token: logprob},
`text_offset`). Chat: one object per token with its UTF-8 `bytes` and a list of alternatives. The
values are the model's own log-probabilities (before temperature and penalties), as vLLM reports.
"""

from __future__ import annotations

from typing import Sequence

from londinium.infer.outputs import TokenLogprob
from londinium.serve.protocol import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprobEntry


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
    """`offset`: characters of text before these tokens (the echoed prompt, or earlier chunks)."""
    out = CompletionLogprobs()
    for e in entries:
        out.tokens.append(e.token)
        out.token_logprobs.append(e.logprob)
        top = {t.token: t.logprob for t in e.top}
        top.setdefault(e.token, e.logprob)  # the chosen token is always listed, as vLLM does
        out.top_logprobs.append(top)
        out.text_offset.append(offset)
        offset += len(e.token)
    return out


def chat_logprobs(entries: Sequence[TokenLogprob], token_bytes: Sequence[bytes]) -> ChatLogprobs:
    return ChatLogprobs(content=[
        ChatTokenLogprob(token=e.token, logprob=e.logprob, bytes=list(token_bytes[e.token_id]),
                         top_logprobs=[TopLogprobEntry(token=t.token, logprob=t.logprob, bytes=list(token_bytes[t.token_id]))
                                       for t in e.top])
        for e in entries])
