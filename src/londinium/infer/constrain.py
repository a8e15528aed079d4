"""Constrained decoding: a grammar per sequence that masks the logits at every step.

    params = SamplingParams(max_tokens=64, constraint=Constraint.json_schema({"type": "object", ...}))
    [c] = engine.generate(["Reply in JSON: "], params)     # c.text parses and validates

A `Constraint` says what the output must be: a JSON Schema, any JSON object (`json_object`), a
regular expression, one of a list of strings, or a grammar in llguidance's Lark syntax. The engine compiles it with llguidance (the grammar
library vLLM, SGLang and llama.cpp use; chosen over xgrammar by measurement, see docs/LOG.md) into a
matcher per sequence. Before each token the matcher gives the set of tokens that keep the output a
prefix of something the grammar accepts; every other token's logit becomes -inf, so the sampler can
only pick allowed ones, whatever the model (an untrained one included). End-of-text is allowed only
where the output is complete. When the grammar admits nothing more the sequence ends with
finish_reason "stop"; one that reaches `max_tokens` first ends with "length", and its text is then
a valid prefix but may be incomplete (as with OpenAI and vLLM): only "stop" promises a whole value.

llguidance reads the tokenizer's own `tokenizer.json` (our byte-level BPE), so it knows each
token's bytes, and a token may span a grammar's pieces (`{"` is one token, not two).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from londinium.errors import LondiniumError

KINDS = ("json_schema", "json_object", "regex", "choice", "lark")

# Compact JSON: no whitespace between tokens. A grammar that allows any whitespace lets a weak model
# spend its whole budget on spaces and newlines; OpenAI's structured outputs are compact too.
_JSON_OPTIONS = {"whitespace_flexible": False}


# Byte -> the 8 tokens it covers as additive logit biases: 0 where the bit is set (allowed), -inf where not.
# A lookup and one add replace unpacking the bits and masked_fill, which cost ~1.4 ms a step at batch 16
# against ~0.3 ms this way (docs/LOG.md, "constrained overhead at batch 16").
_BYTE_BIAS = np.where(np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(bool),
                      np.float32(0), np.float32(-np.inf)).astype(np.float32)


class ConstraintError(LondiniumError):
    """A constraint cannot be compiled (a schema, regex or choice list the grammar library refuses),
    or a sequence left its grammar; the message names the constraint and the reason."""


@dataclass(frozen=True)
class Constraint:
    """What a sequence's output must match: `kind` (one of KINDS) and its `spec` (the JSON Schema as
    a dict, the regex, or the list of choices; None for json_object)."""

    kind: str
    spec: Any = None

    @classmethod
    def json_schema(cls, schema: dict) -> Constraint:
        return cls("json_schema", schema)

    @classmethod
    def json_object(cls) -> Constraint:
        return cls("json_object")

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        return cls("regex", pattern)

    @classmethod
    def choice(cls, options: Sequence[str]) -> Constraint:
        return cls("choice", tuple(options))

    @classmethod
    def lark(cls, grammar: str) -> Constraint:
        """A grammar in llguidance's Lark syntax (JSON Schemas inline as `%json {...}`, special tokens
        as `<|end|>`): the server's tool-call grammar (`serve/tools.py`)."""
        return cls("lark", grammar)

    def describe(self) -> str:
        return self.kind.replace("_", " ")

    def grammar(self) -> str:
        """The llguidance grammar text for this constraint (not yet checked: see `Grammars.check`)."""
        from llguidance import LLMatcher

        if self.kind == "json_schema":
            if not isinstance(self.spec, dict):
                raise ConstraintError(f"json schema: expected a JSON object (a dict), got {type(self.spec).__name__}")
            return LLMatcher.grammar_from_json_schema(self.spec, defaults=_JSON_OPTIONS)
        if self.kind == "json_object":
            return LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=_JSON_OPTIONS)
        if self.kind == "regex":
            if not isinstance(self.spec, str):
                raise ConstraintError(f"regex: expected a string, got {type(self.spec).__name__}")
            return LLMatcher.grammar_from_regex(self.spec)
        if self.kind == "choice":
            if not self.spec or not all(isinstance(c, str) and c for c in self.spec):
                raise ConstraintError("choice: expected a non-empty list of non-empty strings")
            # Lark string literals read JSON's escapes, so json.dumps quotes any text safely.
            return LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in self.spec))
        if self.kind == "lark":
            if not isinstance(self.spec, str):
                raise ConstraintError(f"lark: expected the grammar as a string, got {type(self.spec).__name__}")
            return self.spec
        raise ConstraintError(f"constraint kind {self.kind!r} is unknown; use one of {', '.join(KINDS)}")


class Grammars:
    """The engine's tokenizer as llguidance sees it; compiles constraints into matchers."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_id: int | None):
        import llguidance

        self._llg = llguidance
        # n_vocab: the model's (perhaps padded) vocabulary, so masks have one bit per logit.
        self.tokenizer = llguidance.LLTokenizer(tokenizer.to_str(), n_vocab=vocab_size,
                                                eos_token=eos_id)
        self.vocab_size = vocab_size
        # Compiling a grammar into a matcher costs ~0.25 ms for a small schema (more for a server's tool
        # grammar), paid by every sequence; copying a compiled, unused one costs ~1 us. The same grammar
        # comes again and again (an agent's tools at every step, an application's schema on every request).
        self._compiled = functools.lru_cache(maxsize=256)(self._compile)
        self._bitmask = functools.cache(self._new_bitmask)  # rows -> a buffer reused at every step

    def check(self, constraint: Constraint) -> str:
        """The grammar of `constraint`, or ConstraintError naming what the library refused."""
        grammar = constraint.grammar()
        error = self._compiled(grammar)[1]
        if error:
            raise ConstraintError(f"{constraint.describe()} cannot be compiled: {error}")
        return grammar

    def matcher(self, constraint: Constraint) -> Any:
        """A fresh matcher (one per sequence: it holds the sequence's position in the grammar)."""
        return self._compiled(self.check(constraint))[0].deep_copy()  # the cached one stays at the start

    def _compile(self, grammar: str) -> tuple[Any, str]:
        """An unused matcher of `grammar`, or the library's reason for refusing it (kept too: a
        refused grammar sent again is refused at once)."""
        error = self._llg.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error:
            return None, error.strip()
        matcher = self._llg.LLMatcher(self.tokenizer, grammar, log_level=0)
        return (None, matcher.get_error()) if matcher.is_error() else (matcher, "")

    def mask(self, logits: torch.Tensor, rows: list[int], matchers: list[Any]) -> torch.Tensor:
        """`logits` with every token the matchers of `rows` forbid at -inf (other rows untouched)."""
        # 32 tokens per int32 word, bit i of word w = token 32w + i. Filled through llguidance's pointer API:
        # importing llguidance.torch imports torch._dynamo (it wraps a kernel in torch.compile), seconds
        # of CPU at the first constrained request for nothing used here.
        bitmask, address = self._bitmask(len(rows))
        row_bytes = bitmask.shape[1] * 4
        # One row after another on this thread. llguidance's thread pool (LLExecutor) fills them at once,
        # but handing 16 rows of ~15 us each to its threads cost 7-24 ms a step on this 2-core machine
        # under load, against 0.2-0.5 ms here (docs/LOG.md, "constrained overhead at batch 16").
        for i, matcher in enumerate(matchers):
            matcher.unsafe_compute_mask_ptr(address + i * row_bytes, row_bytes)
        # Little-endian bytes of the words, in order: byte j holds tokens 8j .. 8j+7, bit k token 8j+k.
        # np.take into a new array: a third of the CPU of fancy indexing (24 against 65 us at batch 16).
        bias = np.take(_BYTE_BIAS, bitmask.view(np.uint8), axis=0).reshape(len(rows), -1)
        added = torch.from_numpy(bias if bias.shape[1] == self.vocab_size else bias[:, :self.vocab_size]).to(logits.device)
        if len(rows) == logits.shape[0]:  # every row constrained (rows are in order): one add, into the bias
            return added.add_(logits) if added.is_contiguous() else added + logits
        return logits.index_add(0, torch.tensor(rows, dtype=torch.long, device=logits.device), added)

    def _new_bitmask(self, rows: int) -> tuple[np.ndarray, int]:
        """A bitmask buffer for `rows` rows and its address, reused: each step overwrites every word it
        reads, and a fresh array (np.full, and `.ctypes` for its address) was a third of the mask's
        CPU at batch 1."""
        bitmask = np.empty((rows, (self.vocab_size + 31) // 32), dtype=np.int32)
        return bitmask, bitmask.ctypes.data


def advance(matcher: Any, token: int, constraint: Constraint) -> bool:
    """Feed the sampled `token` to a sequence's matcher; whether the grammar is now complete (admits
    nothing more). A token the mask forbade is a bug, not bad input: it raises ConstraintError."""
    if not matcher.consume_token(token):  # False when the token is refused (the matcher is then in error)
        raise ConstraintError(f"{constraint.describe()}: token {token} left the grammar ({matcher.get_error()})")
    return matcher.is_stopped()
