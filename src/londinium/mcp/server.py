"""`londinium mcp`: the model and its corpus as MCP tools, resources and prompts (official `mcp` SDK).

    londinium mcp                                   stdio: for hosts that spawn the server
    londinium mcp --http --port 8001 [--api-key K]  streamable HTTP at http://127.0.0.1:8001/mcp

Tools (typed input schemas; each answer is structured JSON plus a readable text part): generate,
score_text, compare_continuations, search_corpus, ask, get_document, model_info. Resources: the data
card, the tokenizer report, the report card, the model card of the newest export (each one that
exists when the server starts), and every corpus document at `londinium://corpus/{id}` (the id
percent-encoded). Prompts: explain_phrase_sources, and continue_in_period_style for a corpus whose
profile names its language (`profile.style`; period-london), continue_passage otherwise.

What the server tells a host follows the corpus profile (`service.Wording`): "period English" only
for a profile with a style, "any spelling" only when the search index folds spellings.

A bad argument (an unknown document id, an empty or over-long prompt, a sampling value out of
range, an argument the tool does not take) comes back as a tool error whose text names the
argument; the session goes on. A message that is not JSON-RPC gets a JSON-RPC error (`wire.py`);
an unknown prompt or argument an invalid-params error (`arguments.py`). The work is done by
`service.ModelService`; this module only publishes it.

HTTP takes the API key of `londinium serve` (serve.api_key, $LONDINIUM_API_KEY or --api-key): when
set, every request needs `Authorization: Bearer <key>`; stdio needs none (the host owns the pipe).
"""

# No `from __future__ import annotations`: the SDK reads the tools' argument descriptions from their
# annotations, and some are made per server (from the corpus profile), so they must be objects, not
# strings evaluated later in this module's globals.
import hmac
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from londinium.config import Config
from londinium.errors import LondiniumError
from londinium.eval.perplexity import period_label
from londinium.mcp.arguments import ArgumentCheck
from londinium.mcp.service import DOCUMENT_URI_TEMPLATE, ModelService, Wording, document_uri
from londinium.workspace import Workspace

SERVER_NAME = "londinium"


def instructions(wording: Wording) -> str:
    """What the server tells a host about itself (MCP's `instructions`)."""
    return (f"A small GPT trained from scratch on {wording.corpus}, and that corpus. Use search_corpus to find "
            f"where words or phrases occur{' (any spelling: modern and period spellings match)' if wording.folds else ''} "
            "and cite the document id, source, title and licence it returns; ask for an answer quoted from the corpus "
            "with checked citations (or a refusal when the corpus does not say); get_document for a whole document; "
            "score_text to measure how surprising a passage is to the model; compare_continuations to ask which of "
            "several continuations the model finds likeliest; generate for the model's own continuation of a prompt; "
            "model_info for what the model is.")


# ---- output schemas ------------------------------------------------------------------------------


class GenerateResult(BaseModel):
    text: str = Field(description="The continuation (stop strings and end-of-text not included).")
    finish_reason: str = Field(description="'stop' (end-of-text or a stop string) or 'length' (max_tokens reached).")
    prompt_tokens: int
    completion_tokens: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: Optional[int] = Field(description="The seed used; null: a fresh one.")


class SurprisingToken(BaseModel):
    position: int = Field(description="Index of the token in the passage's tokens.")
    token: str = Field(description="The token's text.")
    start: int = Field(description="Character offset of the token in the passage.")
    end: int
    nll: float = Field(description="Negative log-likelihood in nats (higher: more surprising).")
    probability: float = Field(description="The model's probability of this token in its place.")


class ScoreResult(BaseModel):
    tokens: int
    bytes: int = Field(description="UTF-8 bytes of the passage.")
    log_likelihood: float = Field(description="Sum of the tokens' log-probabilities, in nats.")
    loss: float = Field(description="Mean negative log-likelihood per token (nats), as `londinium eval` reports it.")
    perplexity: float
    bits_per_byte: float = Field(description="Total NLL in bits per UTF-8 byte: tokenizer-independent.")
    surprising: list[SurprisingToken] = Field(description="The most surprising tokens, most surprising first.")


class RankedContinuation(BaseModel):
    rank: int
    continuation: str
    logprob: float = Field(description="log P(continuation | prompt), nats.")
    logprob_per_byte: float = Field(description="logprob per UTF-8 byte: a length-fair comparison.")
    tokens: int


class CompareResult(BaseModel):
    prompt: str
    best: str
    ranking: list[RankedContinuation]


class SearchHit(BaseModel):
    rank: int
    id: str = Field(description="Document id: pass it to get_document, or read the resource at `uri`.")
    uri: str
    source: str
    title: str
    period: list[int] = Field(description="[first year, last year] of the source; [0, 0] unknown.")
    split: str = Field(description="Corpus split the document is in: train, val or test.")
    license: str
    score: float = Field(description="BM25 score.")
    snippet: str = Field(description="The passage where the query's words cluster.")
    snippet_start: int = Field(description="Character offset of the snippet in the document text.")
    snippet_end: int
    matches: list[list[int]] = Field(description="[start, end] character offsets of each matched word in the document.")


class SearchResult(BaseModel):
    query: str
    hits: list[SearchHit]


class AskCitation(BaseModel):
    n: int = Field(description="The passage's number: the answer cites it as [n].")
    id: str = Field(description="Document id (get_document reads it).")
    title: str
    source: str
    license: str
    start: int = Field(description="Character offset of the quote in the document text.")
    end: int
    quote: str = Field(description="The quoted span: the document's text[start:end].")
    valid: bool = Field(description="Checked: the document exists and holds the quote at these offsets.")


class AskResult(BaseModel):
    question: str
    text: str = Field(description="The answer (a quote with [n] markers), or the refusal.")
    refused: bool = Field(description="True when no passage supports an answer: the corpus does not say.")
    support: float = Field(description="The best passage's support, 0-1: the share of the question's words (by rarity) its document holds.")
    min_support: float = Field(description="Below this support the answer is refused (retrieve.min_support).")
    mode: str
    citations: list[AskCitation]


class DocumentResult(BaseModel):
    id: str
    uri: str
    source: str
    title: str
    period: list[int]
    split: str
    license: str
    chars: int
    text: str


class ModelInfo(BaseModel):
    run: str
    checkpoint: str
    step: int
    val_loss: Optional[float]
    parameters: int
    training_tokens: Optional[int]
    architecture: dict[str, Any]
    tokenizer_sha256: str
    device: str
    eval: Optional[dict[str, Any]] = Field(description="The report card's headline figures (null: `londinium eval` has not run).")


# ---- the server ----------------------------------------------------------------------------------


def _result(model: type[BaseModel], data: dict[str, Any], text: str) -> Any:
    """A tool result: `data` as structured content (validated by `model`) and `text` for people."""
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=model(**data).model_dump(mode="json"))


def _tool_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run `fn`; a LondiniumError (bad argument, missing index) becomes an MCP tool error with its message."""
    import functools

    from mcp.server.mcpserver.exceptions import ToolError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LondiniumError as e:
            raise ToolError(str(e)) from None

    return wrapper


def build_server(service: ModelService) -> Any:
    """The MCPServer publishing `service`'s tools, the workspace's reports and documents, and two prompts."""
    from mcp.server import MCPServer
    from mcp.server.mcpserver.exceptions import ResourceError

    from londinium.index.search import render_hits

    ws = service.ws
    wording = service.wording()
    server = MCPServer(SERVER_NAME, instructions=instructions(wording), version=_version())
    server.middleware.append(ArgumentCheck(server))
    readonly = ToolAnnotations(read_only_hint=True, open_world_hint=False)  # nothing here changes state or leaves the machine

    @server.tool(annotations=readonly)
    @_tool_error
    def generate(
        prompt: Annotated[str, Field(description=f"Text for the model to continue (it was trained on {wording.corpus}; it is no chat model).")],
        max_tokens: Annotated[Optional[int], Field(description="Tokens to generate at most (default: generate.max_tokens).", ge=1)] = None,
        temperature: Annotated[Optional[float], Field(description="Sampling temperature; 0 is greedy (default: generate.temperature).", ge=0)] = None,
        top_p: Annotated[Optional[float], Field(description="Nucleus sampling probability mass, in (0, 1] (default: generate.top_p).", gt=0, le=1)] = None,
        seed: Annotated[Optional[int], Field(description="Seed for a reproducible sample (default: a fresh one).")] = None,
        stop: Annotated[Optional[list[str]], Field(description="Stop strings: generation ends before the first one.")] = None,
    ) -> Annotated[CallToolResult, GenerateResult]:
        """Continue a prompt with the trained model. Returns the text, why it stopped and the token counts."""
        r = service.generate(prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stop)
        return _result(GenerateResult, r, f"{r['text']}\n\n[finish_reason {r['finish_reason']}; {r['prompt_tokens']} prompt tokens, "
                                          f"{r['completion_tokens']} generated]")

    @server.tool(annotations=readonly)
    @_tool_error
    def score_text(
        text: Annotated[str, Field(description="The passage to score.")],
        top: Annotated[Optional[int], Field(description="How many of the most surprising tokens to list (default: mcp.surprising_tokens).", ge=0, le=100)] = None,
    ) -> Annotated[CallToolResult, ScoreResult]:
        """How likely the model finds a passage: log-likelihood, perplexity and bits per byte (computed exactly as
        `londinium eval` scores a document), and the tokens it found most surprising, with their offsets."""
        r = service.score_text(text, top)
        worst = ", ".join(f"{t['token']!r} (p={t['probability']:.2g})" for t in r["surprising"][:5])
        return _result(ScoreResult, r, f"{r['tokens']} tokens, {r['bytes']} bytes: log-likelihood {r['log_likelihood']:.2f} nats, "
                                       f"perplexity {r['perplexity']:.2f}, {r['bits_per_byte']:.3f} bits per byte."
                                       + (f"\nMost surprising: {worst}" if worst else ""))

    @server.tool(annotations=readonly)
    @_tool_error
    def compare_continuations(
        prompt: Annotated[str, Field(description="The text the continuations follow.")],
        continuations: Annotated[list[str], Field(description="2 to 20 different candidate continuations; start each with a space when it follows a word.",
                                                  min_length=2, max_length=20)],
    ) -> Annotated[CallToolResult, CompareResult]:
        """Rank candidate continuations of a prompt by the model's log-likelihood (how the probe evaluation scores
        multiple-choice questions). Both the sum (favours short candidates) and the per-byte figure are given."""
        r = service.compare_continuations(prompt, continuations)
        lines = [f"{c['rank']}. {c['continuation']!r}: log P = {c['logprob']:.3f} ({c['logprob_per_byte']:.3f} per byte)" for c in r["ranking"]]
        return _result(CompareResult, r, "\n".join(lines))

    @server.tool(annotations=readonly)
    @_tool_error
    def search_corpus(
        query: Annotated[str, Field(description=wording.query)],
        k: Annotated[int, Field(description="Results at most.", ge=1, le=100)] = 10,
        source: Annotated[Optional[str], Field(description=wording.source)] = None,
        split: Annotated[Optional[str], Field(description="Only this corpus split: train, val or test.")] = None,
        period_from: Annotated[Optional[int], Field(description="Only documents whose period reaches this year or later.")] = None,
        period_to: Annotated[Optional[int], Field(description="Only documents whose period starts by this year.")] = None,
    ) -> Annotated[CallToolResult, SearchResult]:
        """Search the training corpus (BM25). Each hit has the document id, source, title, period, split and
        licence to cite, a snippet around the match with its character offsets, and the score."""
        hits = service.search(query, k=k, source=source, split=split, period_from=period_from, period_to=period_to)
        data = {"query": query, "hits": [{**h.to_dict(), "uri": document_uri(h.id)} for h in hits]}
        return _result(SearchResult, data, render_hits(query, hits))

    @server.tool(annotations=readonly)
    @_tool_error
    def ask(
        question: Annotated[str, Field(description=wording.question)],
        k: Annotated[Optional[int], Field(description="Passages to retrieve at most (default: retrieve.k).", ge=1, le=100)] = None,
        source: Annotated[Optional[str], Field(description=wording.source)] = None,
        split: Annotated[Optional[str], Field(description="Only this corpus split: train, val or test.")] = None,
    ) -> Annotated[CallToolResult, AskResult]:
        """Answer from the corpus with citations (document id, offsets, the quoted span, checked against the corpus),
        or refuse when no passage supports an answer. Extractive: the answer quotes the corpus, it invents nothing."""
        from londinium.retrieve.answer import Answer, Citation, render_answer

        r = service.ask(question, k=k, source=source, split=split)
        shown = Answer(**{**r, "citations": [Citation(**c) for c in r["citations"]]})
        return _result(AskResult, r, render_answer(shown))

    @server.tool(annotations=readonly)
    @_tool_error
    def get_document(
        id: Annotated[str, Field(description="A document id from search_corpus.")],
    ) -> Annotated[CallToolResult, DocumentResult]:
        """One corpus document: its full text with its provenance (source, title, licence, period, split)."""
        r = service.document(id)
        head = f"{r['title'] or r['id']} | source {r['source']}, {period_label(r['period'])}, {r['split']} split | {r['license'] or 'licence unknown'}"
        return _result(DocumentResult, r, f"{head}\n\n{r['text']}")

    @server.tool(annotations=readonly)
    @_tool_error
    def model_info() -> Annotated[CallToolResult, ModelInfo]:
        """What the model is: architecture, parameters, training tokens, checkpoint and its evaluation summary."""
        r = service.model_info()
        a = r["architecture"]
        lines = [f"run {r['run']}, {r['checkpoint']} (step {r['step']}): {r['parameters']:,} parameters, "
                 f"{a['n_layer']} layers x {a['n_embd']} wide, {a['n_head']} heads, context {a['context']}, vocabulary {a['vocab_size']:,}; "
                 f"trained on {r['training_tokens'] or 0:,} tokens"]
        for split, p in (r["eval"] or {}).get("perplexity", {}).items():
            lines.append(f"{split}: {p['bits_per_byte']:.3f} bits per byte, perplexity {p['perplexity']:.1f}")
        if cloze := (r["eval"] or {}).get("cloze"):
            lines.append(f"cloze set: {cloze['accuracy']:.1%} ± {cloze['accuracy_se']:.1%} correct of {cloze['n']} "
                         f"(chance {cloze['chance']:.0%}; ± one standard error)")
        if probes := (r["eval"] or {}).get("probes"):
            lines.append(f"{probes['title'] or 'probes'}: {probes['accuracy']:.0%} correct of {probes['n']} (chance {probes['chance']:.0%})")
        return _result(ModelInfo, r, "\n".join(lines))

    # ---- resources -----------------------------------------------------------------------------

    def file_resource(uri: str, name: str, description: str, path: Path | None) -> None:
        """Publish a report file. Only reports that exist when the server starts are listed (a host
        may read every listed resource); one removed since is a resource error naming the file."""
        if path is None or not path.is_file():
            return

        @server.resource(uri, name=name, description=description, mime_type="text/markdown")
        def read() -> str:
            try:
                return path.read_text(encoding="utf-8")
            except OSError as e:
                raise ResourceError(f"{name}: cannot read {path} ({e.strerror})") from None

    run = service.trained.run
    file_resource("londinium://reports/data-card", "data card", "The corpus data card: sources, licences, sizes, filters, splits.",
                  ws.corpus_report_md)
    file_resource("londinium://reports/tokenizer", "tokenizer report", "The tokenizer report: vocabulary, compression against GPT-2.",
                  ws.tokenizer_report_md)
    file_resource("londinium://reports/eval", "report card", f"The evaluation report card of run {run}.", ws.eval_report_md(run))
    file_resource("londinium://reports/model-card", "model card", f"The model card of the newest export of run {run}.", ws.model_card(run))

    add_document_resource(server, lambda doc_id: service.index.get(doc_id).text)

    # ---- prompts -------------------------------------------------------------------------------

    if wording.style:
        @server.prompt(description=f"Continue a passage in the style of the corpus ({wording.style}) with the model, then comment on it.")
        def continue_in_period_style(passage: str) -> str:
            return (f"Continue the following passage in {wording.style}, the language of the corpus this server's model "
                    f"was trained on. Call the `generate` tool with the passage as the prompt (temperature 0.8, about 80 tokens). "
                    f"Show the continuation, then point out words or spellings in it that belong to the period, and check one "
                    f"unusual word with `search_corpus` to show where the corpus uses it.\n\nPassage:\n{passage}")
    else:
        @server.prompt(description="Continue a passage with the model, then compare the continuation with the corpus.")
        def continue_passage(passage: str) -> str:
            return ("Continue the following passage with this server's model. Call the `generate` tool with the passage as "
                    "the prompt (temperature 0.8, about 80 tokens). Show the continuation, then say how it follows the "
                    "passage and the corpus the model was trained on, and check one unusual word or phrase in it with "
                    f"`search_corpus` to show where the corpus uses it.\n\nPassage:\n{passage}")

    @server.prompt(description="Find where a phrase occurs in the corpus and explain its sources, citing documents.")
    def explain_phrase_sources(phrase: str) -> str:
        return ("Explain where this phrase comes from, using only this server's corpus as evidence. Call `search_corpus` "
                f"with the phrase{' (spelling does not matter)' if wording.folds else ''}, read the best hits (`get_document` if you need more context), "
                "and for each source you rely on cite the document id, title, source, period and licence. Say whether the "
                "phrase is in the model's training split, and call `score_text` on it to report how familiar it is to the "
                f"model (bits per byte; lower is more familiar).\n\nPhrase: {phrase}")

    return server


def add_document_resource(server: Any, document_text: Callable[[str], str]) -> None:
    """Publish every corpus document at DOCUMENT_URI_TEMPLATE; `document_text(id)` reads one, and a
    LondiniumError from it (no such document, no index) is a not-found error with its message."""
    from mcp.server.mcpserver.exceptions import ResourceNotFoundError
    from mcp.server.mcpserver.resources import ResourceSecurity

    # The SDK decodes the id once (document_uri encodes it with the same template). Its path checks
    # (no '..', no absolute path) are for ids that name files; this id is only a key of the index.
    @server.resource(DOCUMENT_URI_TEMPLATE, name="corpus document", mime_type="text/plain",
                     description="A corpus document's text; the id (percent-encoded) comes from search_corpus, which gives each hit's uri.",
                     security=ResourceSecurity(exempt_params={"id"}))
    def corpus_document(id: str) -> str:
        try:
            return document_text(id)
        except LondiniumError as e:
            raise ResourceNotFoundError(str(e)) from None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("londinium")
    except Exception:  # running from a source tree that is not installed
        return "0"


# ---- transports ----------------------------------------------------------------------------------


class BearerKey:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <key>` (compared in constant time)."""

    def __init__(self, app: Any, key: str):
        self.app, self.key = app, key.encode("utf-8")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            auth = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.key):
                body = json.dumps({"error": "missing or wrong API key: send the header 'Authorization: Bearer <key>'"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def api_key(cfg: Config) -> str:
    """serve.api_key, else $LONDINIUM_API_KEY (the same key as `londinium serve`); empty: none."""
    return cfg.serve.api_key or os.environ.get("LONDINIUM_API_KEY", "")


def http_app(server: Any, cfg: Config) -> Any:
    """The streamable HTTP ASGI app (at /mcp), each body checked (`wire.CheckedBody`), behind the API
    key when one is set (a request without it is refused before its body is read), and behind the
    Host and Origin check of `londinium serve` (`serve.hosts`)."""
    from mcp.server.transport_security import TransportSecuritySettings

    from londinium.mcp.wire import CheckedBody, refusal
    from londinium.serve.hosts import HostCheck, trusted_hosts

    # One Host/Origin rule, `londinium serve`'s (below), rather than two that disagree at the edges.
    sdk = server.streamable_http_app(host=cfg.mcp.host, transport_security=TransportSecuritySettings(
        enable_dns_rebinding_protection=False))
    app = CheckedBody(sdk, timeout_s=cfg.serve.read_timeout_s)
    key = api_key(cfg)
    app = BearerKey(app, key) if key else app
    # `londinium serve`'s Host/Origin rule and allow-lists in front (DNS rebinding): the SDK's own
    # check took any Host starting `127.0.0.1:` ('127.0.0.1:8000@evil.example', any port), and none
    # when bound beyond loopback.
    return HostCheck(app, trusted_hosts(cfg.mcp.host, cfg.serve.allowed_hosts, cfg.serve.allowed_origins), refusal)


def serve_mcp(ws: Workspace, cfg: Config, http: bool = False) -> None:
    """Load the model and index, then serve MCP over stdio (the default) or streamable HTTP until stopped."""
    from londinium.config import validate

    log = lambda msg: print(f"londinium mcp: {msg}", file=sys.stderr, flush=True)  # noqa: E731 (stdout is the stdio protocol)
    validate(cfg, "command line")  # command-line flags (--port, --host, ...) land here after the config was loaded
    sock = None
    if http:  # bound before the model loads: a port in use is one line at once
        from londinium.serve.connections import listen

        sock = listen(cfg.mcp.host, cfg.mcp.port, "londinium mcp --http")
    service = ModelService.load(ws, cfg)
    server = build_server(service)
    log(f"serving {service.trained.describe()}" + ("" if service.has_index else f"; search disabled: {service.index_error}"))
    if not http:
        from londinium.mcp.wire import serve_stdio

        serve_stdio(server)
        return
    import uvicorn

    from londinium.serve.connections import connection_limits, quiet_repeats

    host, port = cfg.mcp.host, cfg.mcp.port
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key(cfg):
        log(f"warning: listening on {host} without an API key; anyone who can reach it can use the model (set serve.api_key)")
    log(f"streamable HTTP at http://{host}:{port}/mcp" + (" (API key required)" if api_key(cfg) else ""))
    # The bounds of `londinium serve` ([serve]'s max_connections and read_timeout_s): without them idle or
    # trickling clients held their connections for ever, and at the open-file limit the server died.
    quiet_repeats()
    config = uvicorn.Config(http_app(server, cfg), log_level="warning", **connection_limits(cfg.serve))
    uvicorn.Server(config).run(sockets=[sock])
