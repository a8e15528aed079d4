"""Generation: a KV-cache engine with batched, streaming decoding and the usual sampling controls.

    from londinium.infer import Engine, SamplingParams
    engine = Engine.from_workspace(ws, run="main")            # or Engine(model, tokenizer)
    [c] = engine.generate(["Thou art"], SamplingParams(temperature=0.7, top_p=0.9, seed=1))
    for delta in engine.stream("Thou art", SamplingParams(stop=["."])): print(delta.text, end="")
"""


from __future__ import annotations

import importlib
from typing import Any

# Names load on first use (PEP 562), so the CLI's parser (which imports londinium.infer.options)
# does not pay for importing torch on commands that never generate.
_WHERE = {
    "Engine": "engine", "PromptError": "engine", "EngineRequestError": "engine",
    "EngineLoop": "scheduler", "EngineStopped": "scheduler", "QueueFull": "scheduler", "RequestHandle": "scheduler",
    "Choice": "outputs", "Completion": "outputs", "TextDelta": "outputs", "Timing": "outputs",
    "TokenLogprob": "outputs", "TopLogprob": "outputs",
    "SamplingError": "sampling", "SamplingParams": "sampling",
}

__all__ = [
    "Choice",
    "Completion",
    "Engine",
    "EngineLoop",
    "EngineRequestError",
    "EngineStopped",
    "PromptError",
    "QueueFull",
    "RequestHandle",
    "SamplingError",
    "SamplingParams",
    "TextDelta",
    "Timing",
    "TokenLogprob",
    "TopLogprob",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"londinium.infer.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'londinium.infer' has no attribute {name!r}")
