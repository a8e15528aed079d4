"""What the MCP tools do, as plain Python: one loaded model and the corpus index behind a lock.

    service = ModelService.load(ws, cfg)
    service.generate("It is", max_tokens=20, temperature=0.7, seed=1)
    service.score_text("To be, or not to be")          # == `londinium eval`'s per-document figures
    service.compare_continuations("The quality of mercy is not", [" strain'd", " sold"])
    service.search("vpon the heath"), service.document(doc_id), service.model_info()
    service.ask("Who is the king of Denmark?")          # retrieve.answer.ask: cited answer or refusal

Nothing here is new arithmetic: generation is `infer.engine.Engine` with `SamplingParams.from_config`
(the one place defaults are decided); `score_text` is eval/perplexity.py's sliding window and
`score_rows` exactly as `evaluate_documents` runs them on one document, so its loss, perplexity and
bits per byte equal the report card's on the same text; `compare_continuations` is the probe
scorer of eval/probes.py on one ad-hoc probe. MCP calls run on worker threads, possibly together,
so every use of the model holds one lock (the engine and its KV cache are not shared safely).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any

from londinium.config import Config
from londinium.eval.text_score import token_spans  # noqa: F401 - where the MCP tests and callers found it
from londinium.errors import LondiniumError
from londinium.workspace import Workspace

MAX_CONTINUATIONS = 20


class ToolInputError(LondiniumError):
    """A tool argument is empty, too long or out of range; the message names it."""


DOCUMENT_URI_TEMPLATE = "londinium://corpus/{id}"


def document_uri(doc_id: str) -> str:
    """The MCP resource URI of a corpus document: the id percent-encoded (ids hold '/', '#', '%')
    by the SDK's own URI template, the one the server decodes it with."""
    from mcp.shared.uri_template import UriTemplate

    return UriTemplate.parse(DOCUMENT_URI_TEMPLATE).expand({"id": doc_id})


@dataclass(frozen=True)
class Wording:
    """How the server speaks of its corpus to a host, from the corpus profile (`profiles.profile_for`)
    and the search index: nothing period-specific for a corpus that did not ask for it."""

    style: str  # the profile's name for the corpus's language ("" nothing specific)
    folds: bool  # whether search folds spellings (the index's folding; the profile's without an index)
    sources: tuple[str, ...] = ()  # the indexed source ids

    @property
    def corpus(self) -> str:
        return f"a corpus of {self.style}" if self.style else "a corpus of texts"

    @property
    def query(self) -> str:
        if self.folds:
            return "Words to find, in any spelling ('vpon' finds 'upon' and back)."
        return "Words to find (case does not matter; a word matches as it is spelt)."

    @property
    def question(self) -> str:
        return "A question about the corpus, in any spelling." if self.folds else "A question about the corpus."

    @property
    def source(self) -> str:
        return f"Only this source id ({', '.join(self.sources)})." if self.sources else "Only this source id."


class ModelService:
    """A trained run loaded once, with the corpus index; see the module docstring."""

    def __init__(self, ws: Workspace, cfg: Config, trained: Any):
        from londinium.infer.engine import Engine
        from londinium.tokenizer.codec import eot_id

        self.ws, self.cfg, self.trained = ws, cfg, trained
        self.engine = Engine.from_trained(trained)
        self.context = trained.config.model.context
        self.bos = eot_id(trained.tokenizer)
        self.lock = threading.Lock()
        self._index: Any = None
        self._index_error: LondiniumError | None = None
        self._retriever: Any = None

    @classmethod
    def load(cls, ws: Workspace, cfg: Config) -> ModelService:
        """Load [serve]'s run and checkpoint (run empty: train.run_name) on serve.device, and the index."""
        from londinium.model.load import load_run

        # stdout is the protocol channel under stdio: anything a loader prints goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            trained = load_run(ws, run=cfg.serve.run or cfg.train.run_name, checkpoint=cfg.serve.checkpoint,
                               device=cfg.serve.device, device_setting="serve.device")
            service = cls(ws, cfg, trained)
            service.load_index()
        return service

    def load_index(self) -> None:
        """Load the search index; a missing, stale or damaged one (or a damaged corpus under it) is
        remembered, and the search tools answer with its one-line error: the server serves the model anyway."""
        from londinium.index.search import CorpusIndex

        try:
            self._index, self._index_error = CorpusIndex.load(self.ws, self.cfg.index.snippet_chars), None
        except LondiniumError as e:
            self._index, self._index_error = None, e

    @property
    def has_index(self) -> bool:
        return self._index is not None

    @property
    def index_error(self) -> LondiniumError | None:
        return self._index_error

    def wording(self) -> Wording:
        """How the tools and prompts speak of this corpus (see `Wording`)."""
        from londinium.profiles import profile_for

        profile, index = profile_for(self.ws), self._index
        if index is None:
            return Wording(profile.style, profile.folds)
        return Wording(profile.style, any(f != "none" for f in index.folding.values()), tuple(index.sources))

    @property
    def index(self) -> Any:
        if self._index is None:
            raise self._index_error or LondiniumError("no search index")
        return self._index

    # ---- input checks --------------------------------------------------------------------------

    def _text(self, name: str, value: str) -> str:
        """`value`, or a ToolInputError if it is empty or longer than mcp.max_prompt_chars."""
        limit = self.cfg.mcp.max_prompt_chars
        if not isinstance(value, str) or not value.strip():
            raise ToolInputError(f"{name} is empty; give some text")
        if len(value) > limit:
            raise ToolInputError(f"{name} has {len(value):,} characters, more than the {limit:,} this server accepts (mcp.max_prompt_chars); shorten it")
        return value

    # ---- tools ---------------------------------------------------------------------------------

    def generate(self, prompt: str, max_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, seed: int | None = None, stop: list[str] | None = None) -> dict[str, Any]:
        """The model's continuation of `prompt`; unset controls take the [generate] defaults."""
        from londinium.infer.sampling import SamplingParams

        self._text("prompt", prompt)
        given = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed, "stop": stop}
        params = SamplingParams.from_config(self.cfg.generate, **{k: v for k, v in given.items() if v is not None})
        with self.lock:  # the engine validates params and the prompt's length against the context
            [completion] = self.engine.generate([prompt], params)
        choice = completion.choices[0]
        return {"text": choice.text, "finish_reason": choice.finish_reason,
                "prompt_tokens": completion.timing.prompt_tokens, "completion_tokens": completion.timing.completion_tokens,
                "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed}

    def score_text(self, text: str, top: int | None = None) -> dict[str, Any]:
        """Log-likelihood, perplexity and bits per byte of `text` as `londinium eval` scores a document,
        and its most surprising tokens (highest NLL) with their character offsets in `text`."""
        from londinium.eval.text_score import score_text

        self._text("text", text)
        top = self.cfg.mcp.surprising_tokens if top is None else top
        if not 0 <= top <= 100:
            raise ToolInputError(f"top = {top}: ask for 0 to 100 surprising tokens")
        e = self.cfg.eval
        with self.lock:
            scored = score_text(self.trained.model, self.trained.tokenizer, self.engine.token_bytes, text, self.context,
                                e.stride, e.batch_size)
        tally, spans, nll = scored.tally, scored.spans, scored.nll
        worst = sorted(range(len(nll)), key=lambda k: -nll[k])[:top]
        surprising = [{"position": k, "token": text[spans[k][0]:spans[k][1]] or self.engine.token_text(scored.ids[k]),
                       "start": spans[k][0], "end": spans[k][1], "nll": nll[k], "probability": scored.probability(k)}
                      for k in worst]
        return {"tokens": tally.tokens, "bytes": tally.bytes, "log_likelihood": -tally.nll, "loss": tally.loss,
                "perplexity": tally.perplexity, "bits_per_byte": tally.bits_per_byte, "surprising": surprising}

    def compare_continuations(self, prompt: str, continuations: list[str]) -> dict[str, Any]:
        """Rank `continuations` of `prompt` by log P(continuation | prompt), as a probe's choices are scored."""
        from londinium.eval.probes import Probe, score_probes
        from londinium.tokenizer.codec import encode

        self._text("prompt", prompt)
        if not 2 <= len(continuations) <= MAX_CONTINUATIONS:
            raise ToolInputError(f"continuations: give 2 to {MAX_CONTINUATIONS} candidates, got {len(continuations)}")
        for i, c in enumerate(continuations):
            self._text(f"continuations[{i}]", c)
        if len(set(continuations)) != len(continuations):
            raise ToolInputError("continuations must all differ")
        probe = Probe("query", prompt, continuations[0], tuple(continuations[1:]))
        enc = lambda text: encode(self.trained.tokenizer, text)  # noqa: E731
        with self.lock:
            [result] = score_probes(self.trained.model, enc, [probe], self.bos, self.context, self.cfg.eval.batch_size)
        order = sorted(range(len(continuations)), key=lambda i: -result.logprobs[i])
        ranking = [{"rank": r + 1, "continuation": continuations[i], "logprob": result.logprobs[i],
                    "logprob_per_byte": result.logprobs[i] / result.nbytes[i], "tokens": len(enc(continuations[i]))}
                   for r, i in enumerate(order)]
        return {"prompt": prompt, "best": ranking[0]["continuation"], "ranking": ranking}

    def search(self, query: str, k: int = 10, source: str | None = None, split: str | None = None,
               period_from: int | None = None, period_to: int | None = None) -> list[Any]:
        """The index's hits (`index.search.Hit`) for `query`, best first."""
        self._text("query", query)
        return self.index.search(query, k=k, source=source, split=split, period_from=period_from, period_to=period_to)

    def ask(self, question: str, k: int | None = None, source: str | None = None, split: str | None = None) -> dict[str, Any]:
        """An extractive answer with checked citations, or a refusal (`retrieve/answer.py`, [retrieve]'s mode).
        The retriever loads on the first call; its error (no vector index, say) is the tool's error."""
        from londinium.retrieve.answer import ask
        from londinium.retrieve.retriever import Retriever

        self._text("question", question)
        if self._retriever is None:
            with self.lock:
                self._retriever = self._retriever or Retriever.load(self.ws, self.cfg)
        return ask(self._retriever, question, k=k, mode="extractive", source=source, split=split).to_dict()

    def document(self, doc_id: str) -> dict[str, Any]:
        doc = self.index.get(doc_id)
        return {**doc.provenance(), "uri": document_uri(doc.id), "text": doc.text}

    def model_info(self) -> dict[str, Any]:
        """Architecture, size, training and (if `londinium eval` ran on this run) the report card's summary."""
        t = self.trained
        return {
            "run": t.run, "checkpoint": t.checkpoint.path.name, "step": t.checkpoint.step,
            "val_loss": t.checkpoint.val_loss, "parameters": t.num_params,
            "training_tokens": t.checkpoint.meta.get("tokens_seen"),
            "architecture": {**asdict(t.config.model), "transformers_class": transformers_class(t.config.model)},
            "tokenizer_sha256": t.tokenizer_sha256, "device": str(t.device),
            "eval": eval_summary(self.ws, t.run),
        }


def transformers_class(model_cfg: Any) -> str | None:
    """The `transformers` class an export of this model loads as, or None if it fits neither layout."""
    from londinium.errors import ConfigError
    from londinium.model.hf_layout import gpt2_config, llama_config

    for name, layout in (("GPT2LMHeadModel", gpt2_config), ("LlamaForCausalLM", llama_config)):
        try:
            layout(model_cfg)
            return name
        except ConfigError:
            continue
    return None


def eval_summary(ws: Workspace, run: str) -> dict[str, Any] | None:
    """The headline figures of eval/<run>/results.json, or None when the run has no report card."""
    path = ws.eval_results(run)
    if not path.is_file():
        return None
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    out: dict[str, Any] = {"checkpoint": r.get("checkpoint"), "report": str(ws.eval_report_md(run))}
    out["perplexity"] = {split: {k: block["total"][k] for k in ("perplexity", "bits_per_byte", "tokens")}
                         for split, block in r.get("perplexity", {}).items() if isinstance(block, dict) and "total" in block}
    cloze = r.get("cloze", {}).get("summary", {}).get("overall")
    if cloze and cloze.get("n"):
        out["cloze"] = cloze
    probes = r.get("probes", {}).get("summary", {}).get("overall")
    if probes and probes.get("n"):
        out["probes"] = {**probes, "title": r["probes"].get("title") or r["probes"].get("name", "")}
    return out
