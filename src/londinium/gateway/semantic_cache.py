"""The `semantic_cache` step: an answer reused for a question that means the same as one answered
before ("Which line comes after X?" after "What line follows X?"), where the exact cache (`cache`)
only reuses a byte-identical request.

- **What is compared**: the question, the text of the last user message (a completion's prompt),
  embedded by one of the RAG embedders (`retrieve/embedders.py`; the default is the workspace's
  corpus embedder, local and instant); a hit needs a cosine similarity of at least the threshold
  (`semantic_cache.threshold`, or the route's `semantic_threshold`) to a live entry of the same scope,
  **and** the two questions' particulars must agree (`particulars.py`: quoted spans, names, rare words),
  since every embedder here puts "What line follows "X"?" closer to the same question about X with one
  word changed than to "Which line comes after "X"?". With `frame_threshold`, the two questions'
  frames (each without what they share: "what line follows this text" against "which work is this
  text from") must be that similar too: the same thing asked about the same particulars. The closest
  `CANDIDATES` entries above the threshold are tried in order; the first that passes is the hit.
- **The scope** must match exactly: the endpoint, the tenant (the virtual key's id), the whole
  request but the question (model alias, system prompt, every sampling parameter, tools,
  response_format, stream, ...), so a hit never crosses tenants, models or settings, and the
  numbers in the question, in order ("Genesis 30" never answers "Genesis 31": no embedder here
  tells them apart).
- **Single-turn** requests only (system messages and one user message), unless `multi_turn`: then
  the earlier turns are part of the scope, so they must be identical.
- **What is cached** follows the exact cache: deterministic requests (temperature 0 or a seed)
  unless the route sets `cache_sampled`, 200 answers, streams that ran to their end (replayed as
  streams); TTL, entry and byte bounds, least recently used first (`semantic_index.py`).
- **The index** is kept on disk (`index_path`, an .npz written atomically every `save_interval_s`
  when it changed, and on shutdown) and read back at start-up; with `redis_url` it is shared by every
  gateway on that Redis instead (`semantic_share.py`: a stream of entries each gateway reads into its
  own index before a lookup), and the stream is its memory.
- **Every decision** is the `x-londinium-semantic-cache` header (`hit`, `miss`, `bypass`), the
  ledger's and request log's `outcome` (`semantic_cache`, `semantic_cache_reason`, and on a hit or a
  near one `semantic_similarity`), `londinium_gateway_semantic_cache_total{model, decision, reason}`
  and the similarity of each lookup in `londinium_gateway_semantic_similarity{model}` (a histogram, to
  see how close misses come). A hit is accounted as the exact cache's: 0 tokens, $0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram

from londinium.gateway.cache import bypass_reason, cache_key, call_on, collect, json_text, replay
from londinium.gateway.chain import Exchange, Next, Reply
from londinium.gateway.particulars import agree, frames, load_word_list, particulars
from londinium.gateway.semantic_index import SemanticIndex, write
from londinium.gateway.semantic_share import SemanticFeed
from londinium.gateway.settings import SemanticCacheSection

log = logging.getLogger("londinium.gateway")
HEADER = "x-londinium-semantic-cache"
QUESTION = "\x00question"  # stands for the question in the scope's JSON
# Numbers in a question ("Genesis 30", "verse 16", "3:16", "1,200") are part of its scope: the
# embedders fold them away or barely move for them, yet a different number asks something else.
NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
# Entries above the threshold whose particulars are checked, closest first: a near-miss that differs in a
# particular can be closest, with the paraphrase that should hit behind it.
CANDIDATES = 8


def numbers(text: str) -> list[str]:
    return NUMBER.findall(text)


def open_embedder(cfg: SemanticCacheSection, where: str) -> Any:
    """The configured RAG embedder (`retrieve/embedders.py`)."""
    from londinium.errors import ConfigError
    from londinium.retrieve import embedders as e

    if cfg.embedder == "corpus":
        if not cfg.embedder_path or not Path(cfg.embedder_path).is_file():
            raise ConfigError(f"{where}.embedder_path = {cfg.embedder_path!r}: no corpus embedder there; give the embedder.npz "
                              "that `londinium index vectors` writes (e.g. londinium-work/vectors/embedder.npz)")
        return e.corpus_embedder(Path(cfg.embedder_path))
    if cfg.embedder == "sentence-transformers":
        return e.sentence_transformers_embedder(cfg.embedder_path)
    if cfg.embedder == "wordllama":
        from londinium.workspace import default_cache_dir

        return e.wordllama_embedder(default_cache_dir())
    return e.openai_embedder(cfg.embedder_url, cfg.embedder_model)


def question(endpoint: str, body: dict[str, Any], multi_turn: bool) -> tuple[str, dict[str, Any]] | None:
    """(the question's text, the body with it replaced by a marker) for a request the step can compare,
    else None: a chat whose last message is not the user's plain text, or (without multi_turn) one
    with turns other than system messages before it; a completion with a list of prompts."""
    if endpoint != "chat":
        prompt = body.get("prompt")
        return (prompt, {**body, "prompt": QUESTION, QUESTION: numbers(prompt)}) if isinstance(prompt, str) else None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    content = last.get("content")
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        content = "\n".join(str(p.get("text", "")) for p in content)
    if last.get("role") != "user" or not isinstance(content, str) or set(last) - {"role", "content", "name"}:
        return None
    earlier = messages[:-1]
    if not multi_turn and any(not isinstance(m, dict) or m.get("role") not in ("system", "developer") for m in earlier):
        return None
    return content, {**body, "messages": [*earlier, {**last, "content": QUESTION}], QUESTION: numbers(content)}


class SemanticCache:
    name = "semantic_cache"

    def __init__(self, gateway: Any):
        s = gateway.settings
        self.cfg = cfg = s.semantic_cache
        self.routes = {r.alias: r for r in s.routes}
        self.embedder = open_embedder(cfg, f"{s.source}: semantic_cache")
        self.feed: SemanticFeed | None = None
        if cfg.redis_url:
            self.feed = SemanticFeed(cfg.redis_url, cfg.redis_key, self.embedder.name, self.embedder.dim, cfg.max_entries)
            self.index = SemanticIndex(self.embedder.dim, cfg.max_entries, int(cfg.max_mb * 1024 * 1024))
            log.info("gateway: semantic cache index shared through Redis stream %s", cfg.redis_key)
        else:
            self.index, note = SemanticIndex.load(cfg.index_path, self.embedder.name, self.embedder.dim, cfg.max_entries,
                                                  int(cfg.max_mb * 1024 * 1024))
            log.info("gateway: semantic cache index %s: %s", cfg.index_path, note)
        self.max_entry = int(cfg.max_entry_kb * 1024)
        load_word_list(cfg.rare_zipf)
        self.changed, self.saved_at = False, time.monotonic()
        self.saving: asyncio.Task | None = None
        registry = gateway.telemetry.metrics.registry
        self.decisions = Counter("londinium_gateway_semantic_cache", "Semantic-cache decisions, by model alias, decision (hit, miss, "
                                 "bypass) and reason.", ["model", "decision", "reason"], registry=registry)
        self.similarity = Histogram("londinium_gateway_semantic_similarity", "Cosine similarity of each lookup's closest entry, by model alias.",
                                    ["model"], buckets=(0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 1.0), registry=registry)

    def _model(self, ex: Exchange) -> str:
        return ex.model if ex.model in self.routes else "-"  # bounded labels: configured aliases only

    def _decide(self, ex: Exchange, decision: str, reason: str) -> None:
        ex.outcome["semantic_cache"], ex.outcome["semantic_cache_reason"] = decision, reason
        self.decisions.labels(self._model(ex), decision, reason).inc()

    def threshold(self, ex: Exchange) -> float:
        route = self.routes.get(ex.model)
        return route.semantic_threshold if route is not None and route.semantic_threshold else self.cfg.threshold

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        reason = bypass_reason(ex, self.routes.get(ex.model), "semantic_cache", self.cfg.bypass_keys)
        asked = question(ex.endpoint, ex.body, self.cfg.multi_turn) if reason is None else None
        if reason is None and asked is None:
            reason = "multi-turn" if ex.endpoint == "chat" else "no-question"
        if reason is not None:
            self._decide(ex, "bypass", reason)
            return await call_on(ex, call_next, "bypass", HEADER)
        text, rest = asked
        scope = cache_key(ex.endpoint, rest, ex.key.id if ex.key is not None else "")  # the exact cache's key of all but the question
        vector = (await asyncio.to_thread(self.embedder.embed, [text]))[0]
        if self.feed is not None:
            await self.feed.catch_up(self.index)  # what the other gateways stored meanwhile
        found = self.index.nearest(scope, vector, CANDIDATES)
        if found:
            self.similarity.labels(self._model(ex)).observe(found[0][0])
            ex.outcome["semantic_similarity"] = f"{found[0][0]:.4f}"
            mine = particulars(text, self.cfg.rare_zipf)
            # Taken now: comparing frames awaits an embedding, and an entry stored meanwhile may move rows.
            close = [(similarity, row, self.index.questions[row], self.index.values[row])
                     for similarity, row in found if similarity >= self.threshold(ex)]
            for similarity, row, stored, value in close:
                if not agree(mine, particulars(stored, self.cfg.rare_zipf)):
                    ex.outcome["semantic_particulars"] = "differ"  # as close as a hit, but about something else
                elif await self._same_frame(text, stored, ex):
                    if row < len(self.index) and self.index.questions[row] is stored:
                        self.index.touch(row)
                    ex.outcome["semantic_similarity"] = f"{similarity:.4f}"
                    self._decide(ex, "hit", "similar")
                    return replay(json.loads(value), {HEADER: "hit"})
        ex.outcome["semantic_cache"] = "miss"  # the reason (stored or why not) once the answer is complete
        try:
            reply = await call_on(ex, call_next, "miss", HEADER)
        except BaseException:
            self._decide(ex, "miss", "not-ok")
            raise
        if reply.events is not None:
            reply.events = collect(reply.events, self.max_entry, lambda entry: self._kept(ex, scope, vector, text, entry),
                                   lambda: self._decide(ex, "miss", "not-ok"))
        elif reply.status == 200 and reply.body is not None:
            await self._kept(ex, scope, vector, text, json_text({"body": reply.body}))
        else:
            self._decide(ex, "miss", "not-ok")
        return reply

    async def _same_frame(self, text: str, stored: str, ex: Exchange) -> bool:
        """Whether the two questions ask the same thing of what they share (`particulars.frames`): their
        frames' similarity reaches frame_threshold. Embedded here, per pair, as a frame depends on both."""
        if not self.cfg.frame_threshold:
            return True
        mine, theirs = frames(text, stored, self.cfg.rare_zipf)
        if mine == theirs:  # worded alike once the shared part is out ("this text" alone): nothing to embed
            return True
        a, b = await asyncio.to_thread(self.embedder.embed, [mine, theirs])
        similarity = float(a @ b)
        ex.outcome["semantic_frame_similarity"] = f"{similarity:.4f}"
        if similarity < self.cfg.frame_threshold:
            ex.outcome["semantic_frame"] = "differ"  # the same particulars, asked as another question
            return False
        return True

    async def _kept(self, ex: Exchange, scope: str, vector: Any, text: str, entry: str | None) -> None:
        value = entry.encode("utf-8", "surrogatepass") if entry is not None else b""
        if entry is None or len(value) > self.max_entry:
            self._decide(ex, "miss", "too-large")
            return
        route = self.routes.get(ex.model)
        ttl_s = route.cache_ttl_s if route is not None and route.cache_ttl_s else self.cfg.ttl_s
        self.index.add(scope, vector, value, ttl_s, question=text)
        self._decide(ex, "miss", "stored")
        if self.feed is not None:
            await self.feed.publish(scope, vector, value, text, ttl_s)
            return
        self.changed = True
        interval = self.cfg.save_interval_s
        if interval and time.monotonic() - self.saved_at >= interval and (self.saving is None or self.saving.done()):
            self.saving = asyncio.get_running_loop().create_task(self.save())

    async def save(self) -> None:
        """Write the index if it changed since the last save (on a thread: the file may be megabytes)."""
        if not self.changed:
            return
        self.changed, self.saved_at = False, time.monotonic()
        try:
            await asyncio.to_thread(write, self.cfg.index_path, self.index.snapshot(self.embedder.name))
        except OSError as e:
            self.changed = True
            log.warning("gateway: the semantic cache index could not be saved to %s (%s)", self.cfg.index_path, e)

    async def close(self) -> None:
        if self.saving is not None:
            await self.saving
        await self.save()
        if self.feed is not None:
            await self.feed.close()
