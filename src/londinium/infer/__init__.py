"""Generation: a KV-cache engine with batched, streaming decoding and the usual sampling controls.

    from londinium.infer import Engine, SamplingParams
    engine = Engine.from_workspace(ws, run="main")            # or Engine(model, tokenizer)
    [c] = engine.generate(["Thou art"], SamplingParams(temperature=0.7, top_p=0.9, seed=1))
    for delta in engine.stream("Thou art", SamplingParams(stop=["."])): print(delta.text, end="")
"""

from londinium.infer.engine import Engine, PromptError
from londinium.infer.outputs import Choice, Completion, TextDelta, Timing, TokenLogprob, TopLogprob
from londinium.infer.sampling import SamplingError, SamplingParams

__all__ = [
    "Choice",
    "Completion",
    "Engine",
    "PromptError",
    "SamplingError",
    "SamplingParams",
    "TextDelta",
    "Timing",
    "TokenLogprob",
    "TopLogprob",
]
