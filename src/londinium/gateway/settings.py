"""`gateway.toml`: the gateway's own typed config, checked whole before the port opens.

    [gateway]            where it listens, its database, its chain of steps, retries, breaker
    [telemetry]          where OpenTelemetry spans go
    [[backends]]         one OpenAI-compatible base URL and model each: context, prices, weight, timeouts
    [[routes]]           a model alias clients send -> a group of backends and how to choose among them
    [cache]              the exact cache's store, bounds and who bypasses it (the `cache` step)
    [pii]                the PII guardrail's entities, actions, own recognizers and per-key actions (the `pii` step)
    [output_filter]      the output guardrail's deny-lists, regular expressions and PII in answers (the `output_filter` step)
    [token_limits]       per-key prompt and completion length limits (the `token_limits` step; routes carry their own)
    [semantic_cache]     the semantic cache's embedder, threshold, index file and bounds (the `semantic_cache` step)

Fields are declared with `config.doc` (default, one-line doc, the values accepted), so a value out
of range is the same one-line `ConfigError` as in `londinium.toml`: `gateway.toml: backends[1].input_price
= -1: must be >= 0`. Relations across tables (a route naming an unknown backend, two routes with one
alias, two backends with one name) are checked here too, so a bad config is one line at start-up.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from londinium.config import check_field, doc, resolve_path
from londinium.errors import ConfigError
from londinium.files import read_toml

DEFAULT_CONFIG = "gateway.toml"
NAME = r"[A-Za-z0-9][A-Za-z0-9._:/-]*"
# The steps every request passes through, outermost first (docs/gateway.md, "The chain").
DEFAULT_CHAIN = ["auth", "usage", "limits", "route", "upstream"]
STRATEGIES = ("weighted", "least-busy", "latency", "cost")
HOSTS = dict(pattern=r"\*|[A-Za-z0-9._-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?", hint="(a host name, optionally with :port, or '*')")
ORIGINS = dict(pattern=r"\*|https?://[^\s/]+", hint="(e.g. 'https://app.example.com', or '*')")


@dataclass
class GatewaySection:
    """The gateway process: listening, storage, the chain, retries and the circuit breaker."""

    host: str = doc("127.0.0.1", "Address to bind; anything but loopback without keys_required prints a warning.", nonempty=True)
    port: int = doc(4000, "TCP port.", ge=1, le=65535)
    database: str = doc("", "Where keys, limits and the ledger live: a postgresql:// URL (several gateways share it), or a SQLite file; empty: gateway.db beside this file.")
    keys_required: bool = doc(True, "Every /v1 request needs a virtual key (`londinium gateway keys create`); off: anyone who reaches the port may call, unlimited.")
    chain: list[str] = doc(DEFAULT_CHAIN, "Steps each request passes through, outermost first: names of built-in steps, or 'package.module:factory' for your own.", nonempty=True, pattern=r"[A-Za-z0-9_.-]+(:[A-Za-z_][A-Za-z0-9_]*)?")
    retries: int = doc(2, "Attempts after the first on 429, 5xx, timeouts, lost connections and context overflow (next backend first).", ge=0, le=20)
    backoff_s: float = doc(0.05, "Base of the jittered exponential backoff before trying a backend again (full jitter: uniform in 0..base*2^n).", ge=0, le=60)
    breaker_failures: int = doc(3, "Consecutive failures that open a backend's circuit breaker.", ge=1, le=1000)
    breaker_cooldown_s: float = doc(10.0, "Seconds an open breaker skips its backend before letting one trial request through (half-open).", gt=0, le=86400)
    health_interval_s: float = doc(10.0, "Seconds between health checks of each backend (GET /models); 0: none.", ge=0, le=86400, hint="(0: off)")
    seed: int = doc(-1, "Seed of the weighted choice; negative: a fresh one each start.", le=2**63 - 1)
    request_log: str = doc("", "File the request log is appended to (one JSON line per request); empty: standard error.", path=True)
    log_prompts: bool = doc(False, "Write prompt text into the request log (off: never; spans never carry it).")
    allowed_hosts: list[str] = doc([], "Host names the gateway answers to besides its own addresses (421 otherwise).", **HOSTS)
    allowed_origins: list[str] = doc([], "Browser origins allowed to call the gateway, with CORS headers for them (403 otherwise).", **ORIGINS)
    max_body_mb: float = doc(4.0, "Request bodies larger than this many megabytes get 413.", gt=0, le=1024)
    read_timeout_s: float = doc(30.0, "Seconds a client has to send a request's head, and again its body.", gt=0, le=3600)
    max_connections: int = doc(1024, "Open connections at most; beyond it new ones get 503.", ge=1, le=1_000_000)
    shutdown_timeout_s: float = doc(10.0, "On SIGTERM, seconds running requests may take to finish.", gt=0, le=86400)


@dataclass
class TelemetrySection:
    """OpenTelemetry spans (GenAI semantic conventions) and where they go."""

    exporter: str = doc("none", "'none', 'console' (standard error), 'file' (JSON lines at telemetry.file), 'otlp' (needs opentelemetry-exporter-otlp) or 'memory' (tests).", choices=("none", "console", "file", "otlp", "memory"))
    file: str = doc("", "File the 'file' exporter appends spans to.", path=True)
    otlp_endpoint: str = doc("", "OTLP/HTTP endpoint for 'otlp'; empty: the exporter's default ($OTEL_EXPORTER_OTLP_ENDPOINT).")
    service_name: str = doc("londinium-gateway", "service.name of the spans.", nonempty=True)


@dataclass
class BackendSection:
    """One OpenAI-compatible server and the model it is asked for."""

    name: str = doc("", "Name used by routes, headers, the ledger and metrics.", nonempty=True, pattern=NAME)
    base_url: str = doc("", "The server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1.", pattern=r"https?://[^\s]+", hint="(http:// or https://)")
    model: str = doc("", "Model id sent to this backend.", nonempty=True)
    api_key: str = doc("", "Bearer key the backend needs; empty: api_key_env, else none.")
    api_key_env: str = doc("", "Environment variable holding the backend's key.")
    context: int = doc(0, "Context length in tokens; 0: read max_model_len from its /models (londinium serve, vLLM report it).", ge=0, hint="(0: ask the backend)")
    input_price: float = doc(0.0, "Dollars per million prompt tokens.", ge=0, le=1e6)
    output_price: float = doc(0.0, "Dollars per million completion tokens.", ge=0, le=1e6)
    weight: float = doc(1.0, "Share of traffic under the 'weighted' strategy, relative to the group's other backends.", gt=0, le=1e6)
    timeout_s: float = doc(60.0, "Deadline of a whole answer, or of a stream's first event; then the next backend.", gt=0, le=86400)
    stream_idle_s: float = doc(30.0, "Longest gap between two events of a stream; then the stream ends with an error event.", gt=0, le=86400)
    max_concurrency: int = doc(0, "Requests in flight to this backend at most (0: no cap); a full backend is passed over.", ge=0, hint="(0: no cap)")
    tokenizer: str = doc("", "A tokenizer.json (Hugging Face tokenizers) counting this backend's tokens, for context fitting and usage it does not report.", path=True)


@dataclass
class RouteSection:
    """A model alias and the backends that serve it."""

    alias: str = doc("", "The model name clients send (and GET /v1/models lists).", nonempty=True, pattern=NAME)
    backends: list[str] = doc([], "The group: backend names, in order of preference for fallback ties.", nonempty=True)
    strategy: str = doc("weighted", "How the group is ordered: 'weighted' (random by weight), 'least-busy', 'latency' (lowest smoothed time to first byte) or 'cost' (cheapest for the request).", choices=STRATEGIES)
    classifier: str = doc("", "A router.json from `londinium gateway train-router`: its label puts that class's backends first.", path=True)
    classes: dict = doc({}, "Label -> backend names, for the classifier: e.g. {domain = ['tiny'], general = ['big']}.")
    cache: bool = doc(True, "With the `cache` step in the chain: this route's answers are cached (off: every request bypasses it).")
    cache_ttl_s: float = doc(0.0, "Seconds this route's cached answers live; 0: cache.ttl_s.", ge=0, le=31_536_000, hint="(0: cache.ttl_s)")
    cache_sampled: bool = doc(False, "Cache sampled requests too (temperature > 0 without a seed): a hit then repeats one sample instead of drawing a new one.")
    semantic_cache: bool = doc(True, "With the `semantic_cache` step in the chain: this route's answers are cached by meaning (off: bypassed).")
    semantic_threshold: float = doc(0.0, "Cosine similarity a question needs to an earlier one for a semantic hit; 0: semantic_cache.threshold.", ge=0, le=1, hint="(0: semantic_cache.threshold)")
    max_prompt_tokens: int = doc(0, "With the `token_limits` step: prompts longer than this many tokens get 400 (0: no limit).", ge=0, hint="(0: no limit)")
    max_completion_tokens: int = doc(0, "With the `token_limits` step: max_tokens above this gets 400, and a request without max_tokens gets this (0: no limit).", ge=0, hint="(0: no limit)")
    tpm: int = doc(0, "With the `token_limits` step: tokens per minute the whole route may serve, across keys; then 429 (0: no limit).", ge=0, hint="(0: no limit)")
    response_schema: bool = doc(True, "With the `response_schema` step in the chain: answers to response_format requests are checked against their JSON schema (off: passed as they are).")
    output_filter: bool = doc(True, "With the `output_filter` step in the chain: this route's answers are scanned (off: passed as they are).")
    pii: bool = doc(True, "With the `pii` step in the chain: this route's requests are checked for PII (off: they pass unchecked).")
    pii_actions: dict = doc({}, "Entity -> action for this route, over pii.actions: e.g. {CREDIT_CARD = 'block'}.")


@dataclass
class CacheBounds:
    """How long a cache keeps answers and how many (the exact cache's and the semantic cache's own)."""

    ttl_s: float = doc(3600.0, "Seconds a cached answer lives.", gt=0, le=31_536_000)
    max_entries: int = doc(10_000, "Answers kept in this process at most; the least recently used goes first.", ge=1, le=100_000_000)
    max_mb: float = doc(64.0, "Megabytes of answers kept in this process at most (an exact cache in Redis: bound it with Redis's own maxmemory).", gt=0, le=1_000_000)
    max_entry_kb: float = doc(256.0, "Answers larger than this many kilobytes are not kept (in any store).", gt=0, le=1_000_000)
    bypass_keys: list[str] = doc([], "Names of virtual keys whose requests never use this cache.")


@dataclass
class CacheSection(CacheBounds):
    """The exact cache (the `cache` step): where answers are kept, for how long, how many."""

    store: str = doc("memory", "'memory' (an LRU inside this gateway process) or 'redis' (shared by every gateway on it; needs the redis extra).", choices=("memory", "redis"))
    redis_url: str = doc("", "The Redis server for store = 'redis', e.g. redis://127.0.0.1:6379/0.", pattern=r"(rediss?|unix)://[^\s]*|", hint="(redis://, rediss:// or unix://)")
    prefix: str = doc("londinium:cache:", "Prefix of the cache's Redis keys (several gateway groups can share one Redis).", nonempty=True)


@dataclass
class SemanticCacheSection(CacheBounds):
    """The semantic cache (the `semantic_cache` step): an answer reused for a question that means the same."""

    embedder: str = doc("corpus", "'corpus' (the workspace's static embedder from `londinium index vectors`), 'wordllama', 'sentence-transformers' (a model folder) or 'openai' (an /v1/embeddings URL).",
                        choices=("corpus", "wordllama", "sentence-transformers", "openai"))
    embedder_path: str = doc("", "For 'corpus': the embedder.npz (e.g. londinium-work/vectors/embedder.npz); for 'sentence-transformers': the model folder.", path=True)
    embedder_url: str = doc("", "For 'openai': the base URL, e.g. http://127.0.0.1:8000/v1.")
    embedder_model: str = doc("", "For 'openai': the embedding model's name.")
    threshold: float = doc(0.97, "Cosine similarity a question needs to an earlier one of the same scope for a hit (chosen on labelled pairs: docs/LOG.md).", gt=0, le=1)
    rare_zipf: float = doc(4.0, "A hit also needs the questions' particulars to agree (quoted spans, names, words rarer than this on wordfreq's Zipf scale: 4 is once per 100,000 English words); 0: quoted spans and names only (chosen on labelled pairs: docs/LOG.md).", ge=0, le=8)
    frame_threshold: float = doc(0.0, "A hit also needs the questions' frames (each without the particulars and passage they share: \"what line follows this text\" against \"which work is this text from\") to be this similar; 0: not compared. Helps a contextual embedder (sentence-transformers), not the static ones (docs/gateway.md).", ge=0, le=1)
    multi_turn: bool = doc(False, "Also cache conversations: the last user message is compared by meaning, every earlier message must be identical (off: single-turn requests only).")
    index_path: str = doc("", "The index file (.npz), written atomically on shutdown and every save_interval_s; empty: semantic-cache.npz beside this file.", path=True)
    redis_url: str = doc("", "Share the index with every gateway on this Redis (a stream of entries, e.g. redis://127.0.0.1:6379/0; needs the redis extra); then the stream, not index_path, is the cache's memory. Empty: this gateway only.", pattern=r"(rediss?|unix)://[^\s]*|", hint="(redis://, rediss:// or unix://)")
    redis_key: str = doc("londinium:semantic-cache", "The Redis stream's key (several gateway groups can share one Redis).", nonempty=True)
    save_interval_s: float = doc(60.0, "Seconds between saves of a changed index (a save also happens on shutdown); 0: only on shutdown.", ge=0, le=86400)


@dataclass
class TokenLimitsSection:
    """Per-key length limits of the `token_limits` step (the routes' own are in [[routes]])."""

    keys: dict = doc({}, "Virtual key name -> its limits, e.g. {partner = {max_prompt_tokens = 2000, max_completion_tokens = 256}}; the smaller of the key's and the route's applies.")


TOKEN_LIMITS = ("max_prompt_tokens", "max_completion_tokens")
OUTPUT_ACTIONS = ("mask", "block")


@dataclass
class OutputFilterSection:
    """The output guardrail (the `output_filter` step): what an answer must not carry to the client."""

    actions: dict = doc({}, "Rule or entity -> 'mask' ([NAME] in its place) or 'block' (the answer ends before it, finish_reason 'content_filter'); an entity not in patterns or deny_lists is personal data found by Presidio (EMAIL_ADDRESS, CREDIT_CARD, ...).")
    patterns: dict = doc({}, "Your own rules: name -> regular expression (the `regex` package's syntax), e.g. {ORDER_ID = 'ORD-[0-9]{6}'}.")
    deny_lists: dict = doc({}, "Your own rules: name -> words matched whole and in any case, e.g. {SECRET = ['Falcon', 'Osprey']}.")
    pii_hold_chars: int = doc(64, "Characters of a stream held back while personal data is looked for: longer than any entity it finds.", ge=1, le=4096)
    max_hold_chars: int = doc(1024, "Longest tail a pattern's possible match may hold back in a stream; beyond it the text goes out.", ge=1, le=1_000_000)


PII_ACTIONS = ("mask", "block", "log", "off")


@dataclass
class PiiSection:
    """The PII guardrail (the `pii` step): what it looks for and what it does with each kind."""

    actions: dict = doc({"EMAIL_ADDRESS": "mask", "PHONE_NUMBER": "mask", "CREDIT_CARD": "mask", "IBAN_CODE": "mask", "IP_ADDRESS": "mask"},
                        "Entity -> 'mask' (a placeholder upstream, the value back in the answer), 'block' (400), 'log' (counted only) or 'off'.")
    keys: dict = doc({}, "Virtual key name -> its own entity actions, over the route's: e.g. {partner = {EMAIL_ADDRESS = 'log'}}.")
    patterns: dict = doc({}, "Your own entities: name -> regular expression, e.g. {ORDER_ID = 'ORD-[0-9]{6}'} (give each an action).")
    deny_lists: dict = doc({}, "Your own entities: name -> words that always are that entity, e.g. {PROJECT = ['Falcon']}.")
    ner_model: str = doc("", "A spaCy pipeline folder for names (PERSON, LOCATION, NRP, DATE_TIME); empty: pattern recognizers only.", path=True)
    language: str = doc("en", "Language code the recognizers are set up for.", nonempty=True)
    score_threshold: float = doc(0.4, "Presidio's confidence a finding needs: its phone pattern scores 0.4 (no NLP context words raise it here), IP 0.6, validated emails, cards and IBANs 1.0.", ge=0, le=1)
    bypass_keys: list[str] = doc([], "Names of virtual keys whose requests are never checked.")


REQUIRED = {BackendSection: ("name", "base_url", "model"), RouteSection: ("alias", "backends")}


@dataclass
class GatewaySettings:
    gateway: GatewaySection = field(default_factory=GatewaySection)
    telemetry: TelemetrySection = field(default_factory=TelemetrySection)
    backends: list[BackendSection] = field(default_factory=list)
    routes: list[RouteSection] = field(default_factory=list)
    cache: CacheSection = field(default_factory=CacheSection)
    pii: PiiSection = field(default_factory=PiiSection)
    semantic_cache: SemanticCacheSection = field(default_factory=SemanticCacheSection)
    output_filter: OutputFilterSection = field(default_factory=OutputFilterSection)
    token_limits: TokenLimitsSection = field(default_factory=TokenLimitsSection)
    source: str = "gateway.toml"  # where it was read from, for messages

    def backend(self, name: str) -> BackendSection:
        return next(b for b in self.backends if b.name == name)

    def route(self, alias: str) -> RouteSection | None:
        return next((r for r in self.routes if r.alias == alias), None)

    def database_url(self) -> str:
        """The database: as configured, else gateway.db beside the config file."""
        db = self.gateway.database
        if db.startswith(("postgresql://", "postgres://")):
            return db
        folder = Path(self.source).parent if self.source.endswith(".toml") else Path.cwd()
        return str((folder / (db or "gateway.db")).absolute())


def _table(cls: type, data: Any, where: str, folder: Path) -> Any:
    """A dataclass from a TOML table: unknown keys and values out of range are a ConfigError naming them."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table of key = value")
    hints = typing.get_type_hints(cls)
    obj = cls()
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown key '{key}'; known keys: {', '.join(hints)}")
        if hints[key] is dict:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key} must be a table, e.g. {{domain = ['tiny'], general = ['big']}}")
        else:
            if hints[key] is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            check_field(cls, key, value, f"{where}.{key}")
            value = resolve_path(cls, key, value, folder)
        setattr(obj, key, value)
    for name in REQUIRED.get(cls, ()):
        if name not in data:
            doc_line = next(f for f in dataclasses.fields(cls) if f.name == name).metadata["doc"]
            raise ConfigError(f"{where}: '{name}' is required ({doc_line})")
    return obj


def load_settings(path: str | Path) -> GatewaySettings:
    """Read and check `gateway.toml`; every problem is one ConfigError line naming the file and field."""
    path = Path(path)
    data = read_toml(path, "gateway config", ConfigError, hint="write one as docs/gateway.md shows")
    return parse_settings(data, str(path), path.absolute().parent)


def parse_settings(data: dict[str, Any], source: str = DEFAULT_CONFIG, folder: Path | None = None) -> GatewaySettings:
    folder = folder or Path.cwd()
    known = {"gateway", "telemetry", "backends", "routes", "cache", "pii", "semantic_cache", "output_filter", "token_limits"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: unknown table [{key}]; known: [gateway], [telemetry], [[backends]], [[routes]], [cache], [pii], [semantic_cache], [output_filter], [token_limits]")
    s = GatewaySettings(source=source)
    s.gateway = _table(GatewaySection, data.get("gateway", {}), f"{source}: gateway", folder)
    s.telemetry = _table(TelemetrySection, data.get("telemetry", {}), f"{source}: telemetry", folder)
    s.cache = _table(CacheSection, data.get("cache", {}), f"{source}: cache", folder)
    s.pii = _table(PiiSection, data.get("pii", {}), f"{source}: pii", folder)
    s.semantic_cache = _table(SemanticCacheSection, data.get("semantic_cache", {}), f"{source}: semantic_cache", folder)
    s.token_limits = _table(TokenLimitsSection, data.get("token_limits", {}), f"{source}: token_limits", folder)
    s.output_filter = _table(OutputFilterSection, data.get("output_filter", {}), f"{source}: output_filter", folder)
    if not s.semantic_cache.index_path:
        s.semantic_cache.index_path = str(folder / "semantic-cache.npz")
    for kind in ("backends", "routes"):
        if not isinstance(data.get(kind, []), list):
            raise ConfigError(f"{source}: {kind} must be an array of tables ([[{kind}]])")
    s.backends = [_table(BackendSection, b, f"{source}: backends[{i}]", folder) for i, b in enumerate(data.get("backends", []))]
    s.routes = [_table(RouteSection, r, f"{source}: routes[{i}]", folder) for i, r in enumerate(data.get("routes", []))]
    check_relations(s)
    return s


def _duplicate(values: list[str]) -> str | None:
    seen: set[str] = set()
    return next((v for v in values if v in seen or seen.add(v)), None)  # type: ignore[func-returns-value]


def check_relations(s: GatewaySettings) -> None:
    """What no single field can say: names unique, routes naming known backends, the chain's steps known."""
    src = s.source
    if not s.backends:
        raise ConfigError(f"{src}: no [[backends]]: add at least one (name, base_url, model)")
    if not s.routes:
        raise ConfigError(f"{src}: no [[routes]]: add at least one (alias, backends) so clients have a model to ask for")
    if (dup := _duplicate([b.name for b in s.backends])) is not None:
        raise ConfigError(f"{src}: two backends are named {dup!r}; backend names must be unique")
    if (dup := _duplicate([r.alias for r in s.routes])) is not None:
        raise ConfigError(f"{src}: two routes have the alias {dup!r}; each alias must name one route")
    names = [b.name for b in s.backends]
    for i, r in enumerate(s.routes):
        for name in r.backends + [n for group in r.classes.values() for n in (group if isinstance(group, list) else [group])]:
            if name not in names:
                raise ConfigError(f"{src}: routes[{i}] ({r.alias!r}) names an unknown backend {name!r}; known backends: {', '.join(names)}")
        for label, group in r.classes.items():
            if not isinstance(group, list) or not all(isinstance(n, str) for n in group):
                raise ConfigError(f"{src}: routes[{i}].classes.{label} must be a list of backend names")
            if not set(group) <= set(r.backends):
                raise ConfigError(f"{src}: routes[{i}].classes.{label} names backends outside the route's group {r.backends}")
        if r.classes and not r.classifier:
            raise ConfigError(f"{src}: routes[{i}] ({r.alias!r}) has classes but no classifier; train one with `londinium gateway train-router`")
        if r.classifier and not Path(r.classifier).is_file():
            raise ConfigError(f"{src}: routes[{i}].classifier {r.classifier} does not exist; train it with `londinium gateway train-router --out {r.classifier}`")
    if s.cache.store == "redis" and not s.cache.redis_url:
        raise ConfigError(f"{src}: cache.store = 'redis' needs cache.redis_url, e.g. redis://127.0.0.1:6379/0")
    check_pii_actions(s)
    check_output_filter(s)
    for name, limits in s.token_limits.keys.items():
        if not isinstance(limits, dict):
            raise ConfigError(f"{src}: token_limits.keys.{name} must be a table, e.g. {{max_prompt_tokens = 2000}}")
        for limit, value in limits.items():
            if limit not in TOKEN_LIMITS:
                raise ConfigError(f"{src}: token_limits.keys.{name}.{limit}: unknown limit; known: {', '.join(TOKEN_LIMITS)}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{src}: token_limits.keys.{name}.{limit} = {value!r}: must be a whole number >= 0 (0: no limit)")
    s.gateway.chain = list(s.gateway.chain)
    if s.gateway.chain[-1] != "upstream":
        raise ConfigError(f"{src}: gateway.chain must end with 'upstream' (the call to a backend), not {s.gateway.chain[-1]!r}")


def check_pii_actions(s: GatewaySettings) -> None:
    """Every entity action table (global, per route, per key) maps names to one of PII_ACTIONS. Whether
    a recognizer finds each entity is checked when the `pii` step builds its detector."""
    tables = [("pii.actions", s.pii.actions)] + [(f"routes[{i}].pii_actions", r.pii_actions) for i, r in enumerate(s.routes)]
    for name, actions in s.pii.keys.items():
        if not isinstance(actions, dict):
            raise ConfigError(f"{s.source}: pii.keys.{name} must be a table of entity = action, e.g. {{EMAIL_ADDRESS = 'log'}}")
        tables.append((f"pii.keys.{name}", actions))
    for where, actions in tables:
        for entity, action in actions.items():
            if action not in PII_ACTIONS:
                raise ConfigError(f"{s.source}: {where}.{entity} = {action!r}: must be one of {', '.join(PII_ACTIONS)}")
    for where, table in (("pii.patterns", s.pii.patterns), ("pii.deny_lists", s.pii.deny_lists)):
        for entity in table:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", entity):
                raise ConfigError(f"{s.source}: {where}.{entity}: entity names are capitals, digits and '_' (e.g. ORDER_ID), "
                                  "as they become placeholders such as <ORDER_ID_1>")
    if s.pii.patterns and not all(isinstance(v, str) for v in s.pii.patterns.values()):
        raise ConfigError(f"{s.source}: pii.patterns values must be regular expressions (strings)")


def check_output_filter(s: GatewaySettings) -> None:
    """[output_filter]: actions mask or block, rule names as entity names, patterns that compile, each rule with an action."""
    import regex

    f = s.output_filter
    for name, action in f.actions.items():
        if action not in OUTPUT_ACTIONS:
            raise ConfigError(f"{s.source}: output_filter.actions.{name} = {action!r}: must be one of {', '.join(OUTPUT_ACTIONS)}")
    for where, table in (("output_filter.patterns", f.patterns), ("output_filter.deny_lists", f.deny_lists)):
        for name, value in table.items():
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ConfigError(f"{s.source}: {where}.{name}: rule names are capitals, digits and '_' (e.g. SECRET), as they become [SECRET]")
            if name not in f.actions:
                raise ConfigError(f"{s.source}: {where}.{name} has no action: add {name} = 'mask' or 'block' to output_filter.actions")
            if where.endswith("deny_lists") and (not isinstance(value, list) or not value or not all(isinstance(w, str) and w for w in value)):
                raise ConfigError(f"{s.source}: {where}.{name} must be a list of words, e.g. ['Falcon', 'Osprey']")
    for name, pattern in f.patterns.items():
        try:
            if not isinstance(pattern, str):
                raise TypeError("not a string")
            regex.compile(pattern)
        except (regex.error, TypeError) as e:
            raise ConfigError(f"{s.source}: output_filter.patterns.{name} = {pattern!r}: not a regular expression ({e})") from None
