"""The `londinium` command: one sub-command per stage, each a thin call into the library.

    londinium corpus build      sources -> corpus/{train,val,test}.jsonl + data card
    londinium tokenizer train   corpus -> tokenizer/tokenizer.json + report
    londinium data prepare      corpus + tokenizer -> shards/{train,val,test}.bin + meta.json
    londinium train             shards -> runs/<name>/ checkpoints, metrics, loss plot (--resume, --run;
                                torchrun --nproc_per_node=N -m londinium train for DDP)
    londinium tasks build       corpus -> tasks/<task>/items.jsonl: tasks with checkable answers + tasks/card.md
    londinium rl                an SFT run + tasks -> runs/<run>-rl/: reinforcement learning (GRPO) on the tasks' rewards
    londinium model info        parameters, FLOPs per token and memory of the configured model
    londinium model memory      what generation and serving need: weights, KV cache, activations (--context,
                                --batch, --weight-dtype, --kv-dtype)
    londinium eval              a checkpoint -> eval/<run>/report.md + results.json (--run, --text FILE,
                                --compare RUN_A RUN_B)
    londinium generate          a checkpoint -> text (--prompt/--prompts-file, every sampling flag, --format json)
    londinium chat              an interactive REPL that streams the model's continuation of your text
    londinium export            a checkpoint -> exports/<run>-step-<N>/ (transformers) or .gguf (llama.cpp)
    londinium serve             an OpenAI-compatible HTTP server over a run (--run, --host, --port, --api-key)
    londinium index build       corpus -> index/ (BM25 over words folded as the corpus profile says, for search and MCP)
    londinium search QUERY      the best-matching corpus documents, with snippet and provenance (--format json)
    londinium index vectors     corpus -> vectors/ (an embedding per passage, for hybrid retrieval)
    londinium embed TEXT...     embeddings of texts with retrieve.embedder (--format json)
    londinium ask QUESTION      an answer from the corpus with checked citations, or a refusal (docs/rag.md)
    londinium mcp               the model and corpus as MCP tools, resources and prompts (stdio; --http)
    londinium agent TASK        a tool-calling loop over MCP servers and a model (--model URL|RUN, --mcp, --max-steps)
    londinium bench serve       load an OpenAI-compatible server: TTFT/TPOT/ITL/E2EL, throughput, goodput -> bench/<name>/
    londinium gateway           one OpenAI endpoint in front of many backends (routing, fallback, keys, budgets,
                                usage ledger, metrics, traces); `gateway keys|usage|train-router` (docs/gateway.md)
    londinium config show       the effective config, with a comment per field
    londinium quickstart        every stage, on corpus.sources or the embedded default

Every command takes --workspace, --config, --preset, --set section.key=value and --force.
Errors the user can fix (LondiniumError) print one line and exit 2; so does a full disk, and a stage
that another process is running (its pid and command named). When the reader of the output goes
away (`londinium ... | head`), a stage finishes and records its work silently, a command that only
prints stops; both exit 141, the status of a program that SIGPIPE ended. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

from londinium.config import KV_DTYPES, WEIGHT_DTYPES, Config, load_config, to_toml
from londinium.errors import ConfigError, LondiniumError
from londinium.workspace import DEFAULT_WORKSPACE, Workspace

DEFAULT_CONFIG_FILE = "londinium.toml"


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("common options")
    g.add_argument("--workspace", "-w", default=DEFAULT_WORKSPACE, help=f"workspace directory (default: ./{DEFAULT_WORKSPACE})")
    g.add_argument("--config", "-c", default=None, help=f"config TOML (default: ./{DEFAULT_CONFIG_FILE} if it exists)")
    g.add_argument("--preset", default=None, help="preset applied under the config file: tiny, small, slm, regular")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    g.add_argument("--force", action="store_true", help="re-run the stage even if it is up to date")


def _config_path(args: argparse.Namespace) -> str | None:
    if args.config is None and Path(DEFAULT_CONFIG_FILE).is_file():
        return DEFAULT_CONFIG_FILE
    return args.config


def _context(args: argparse.Namespace) -> tuple[Workspace, Config]:
    cfg = load_config(_config_path(args), args.overrides, args.preset)
    return Workspace(args.workspace), cfg


# ---- handlers ------------------------------------------------------------------------------------


def cmd_config_show(args: argparse.Namespace) -> int:
    _, cfg = _context(args)
    print(to_toml(cfg), end="")
    return 0


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from londinium.corpus.build import build_corpus

    ws, cfg = _context(args)
    if args.strict:
        cfg.corpus.strict = True
    build_corpus(ws, cfg.corpus, force=args.force)
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from londinium.tokenizer.train import train_tokenizer

    ws, cfg = _context(args)
    train_tokenizer(ws, cfg.tokenizer, cache_dir=cfg.corpus.cache_dir, download_timeout_s=cfg.corpus.download_timeout_s, force=args.force)
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from londinium.data.shards import prepare_shards

    ws, cfg = _context(args)
    prepare_shards(ws, cfg.data, force=args.force)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    ws, cfg = _context(args)
    if args.run:
        cfg.train.run_name = args.run
    return _train_run(args, ws, cfg.train.run_name, lambda: cfg)


def _train_run(args: argparse.Namespace, ws: Workspace, name: str, fresh: Callable[[], Config],
               resumed: Callable[[Config], Config] = lambda cfg: cfg) -> int:
    """Train run `name` under its lock, with the config `fresh()` makes or, with --resume, the run's own
    config (only what this command sets on purpose on top) through `resumed`."""
    ws.run_dir(name)  # a bad name is refused before it names a lock
    with ws.lock(f"train/{name}"):  # before torch loads: a second train is refused at once
        from londinium.train.resume import resume_config
        from londinium.train.trainer import train

        if args.resume:
            cfg = resumed(resume_config(ws, name, _config_path(args), args.overrides, args.preset))
        else:
            cfg = fresh()
        train(ws, cfg, force=args.force)
    return 0


def _from_base(p: argparse.ArgumentParser, section: str, what: str, kind: str) -> None:
    """The options of a run made from another run (sft, rl): the base, its checkpoint, the new run's
    name and --resume, each defaulting to `section`'s setting."""
    p.add_argument("--run", "--run-name", dest="run", default=None, metavar="BASE",
                   help=f"the run to {what} (default: {section}.base, else train.run_name); write --run-name under torchrun")
    p.add_argument("--checkpoint", default=None,
                   help=f"the base's checkpoint: 'best', 'latest', 'step-N' or a directory (default: {section}.checkpoint)")
    p.add_argument("--name", default=None, metavar="NAME",
                   help=f"name of the {kind} run (default: {section}.run_name, else <BASE>-{section})")
    p.add_argument("--resume", action="store_true", help=f"continue the {kind} run from its newest valid checkpoint, with its config")


def cmd_sft(args: argparse.Namespace) -> int:
    from londinium.train.sft_run import sft_config, sft_onto_train, sft_run_name

    ws, cfg = _context(args)
    s = cfg.sft
    s.base = args.run or s.base
    s.run_name = args.name or s.run_name
    s.checkpoint = args.checkpoint or s.checkpoint
    s.data += [str(Path(p).resolve()) for p in args.data]
    if args.tasks:
        s.tasks = [] if args.tasks == ["none"] else args.tasks
    elif args.data:  # --data alone: the user's conversations only
        s.tasks = []
    if not s.base:
        s.base = cfg.train.run_name
    return _train_run(args, ws, sft_run_name(cfg), lambda: sft_config(ws, cfg), sft_onto_train)


def cmd_rl(args: argparse.Namespace) -> int:
    from londinium.rl.run import rl_config, rl_onto_train, rl_run_name

    ws, cfg = _context(args)
    r = cfg.rl
    r.base = args.run or r.base or cfg.train.run_name
    r.run_name = args.name or r.run_name
    r.checkpoint = args.checkpoint or r.checkpoint
    r.tasks = args.task or r.tasks
    r.rewards = args.reward or r.rewards
    name = rl_run_name(cfg)
    rc = _train_run(args, ws, name, lambda: rl_config(ws, cfg), rl_onto_train)
    from londinium.rl.report import write_report

    print("rl: curves and report -> {} and {}".format(*write_report(ws, name)))
    return rc


def cmd_distill(args: argparse.Namespace) -> int:
    from londinium.train.distill_run import distill_config, student_run_name

    ws, cfg = _context(args)
    d = cfg.distill
    d.teacher = args.teacher or d.teacher
    d.teacher_checkpoint = args.teacher_checkpoint or d.teacher_checkpoint
    d.run_name = args.name or d.run_name
    d.top_k = d.top_k if args.top_k is None else args.top_k
    if args.sft:
        d.sft, cfg.sft.base = True, args.sft
    if not d.teacher and not (args.resume and d.run_name):
        raise ConfigError("londinium distill needs a teacher: --teacher RUN (a trained run of this workspace), "
                          "or --resume --name STUDENT to continue a student run")
    if args.cache_only:
        from londinium.train.distill_cache import build_for

        if not d.top_k:
            raise ConfigError("--cache-only writes the teacher's top-k cache: give --top-k K")
        print(build_for(ws, distill_config(ws, cfg), print).path)
        return 0
    return _train_run(args, ws, student_run_name(cfg), lambda: distill_config(ws, cfg))


def cmd_tasks_build(args: argparse.Namespace) -> int:
    from londinium.tasks.build import build_tasks

    ws, cfg = _context(args)
    if args.task:
        cfg.tasks.tasks = args.task
    build_tasks(ws, cfg.tasks, force=args.force)
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    import dataclasses

    from londinium.model.info import render_info, resolve_vocab_size

    ws, cfg = _context(args)
    vocab, source = resolve_vocab_size(cfg, ws.tokenizer_file)
    model = dataclasses.replace(cfg.model, vocab_size=vocab)
    print(render_info(model, cfg.train.batch_size, vocab_from=source, preset=cfg.preset), end="")
    return 0


def cmd_model_memory(args: argparse.Namespace) -> int:
    import dataclasses

    from londinium.model.info import resolve_vocab_size
    from londinium.model.memory import memory_plan, render_memory

    ws, cfg = _context(args)
    vocab, _ = resolve_vocab_size(cfg, ws.tokenizer_file)
    model = dataclasses.replace(cfg.model, vocab_size=vocab)
    context = args.context or model.context
    if not 1 <= context <= model.context:
        raise LondiniumError(f"--context {context}: give 1 .. {model.context} tokens (model.context)")
    if args.batch is not None and args.batch < 1:
        raise LondiniumError(f"--batch {args.batch}: give at least 1 sequence")
    weight_dtype, kv_dtype = args.weight_dtype or cfg.generate.weight_dtype, args.kv_dtype or cfg.generate.kv_dtype
    plan = memory_plan(model, args.batch or cfg.serve.max_running, context, weight_dtype, kv_dtype, cfg.serve.max_step_tokens)
    print(render_memory(model, plan, weight_dtype, kv_dtype, preset=cfg.preset), end="")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    ws, cfg = _context(args)
    if args.compare:
        from londinium.eval.compare import compare_runs

        markdown, path = compare_runs(ws, *args.compare)
        print(markdown)
        print(f"written to {path}")
        return 0
    from londinium.eval.run import evaluate

    if args.shots is not None and args.shots < 0:
        raise LondiniumError(f"--shots {args.shots}: give 0 or more solved examples")
    if args.checkpoint:
        cfg.eval.checkpoint = args.checkpoint
    evaluate(ws, cfg, run=args.run, texts=args.text, force=args.force, tasks=args.tasks, shots=args.shots)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from londinium.infer.commands import generate_command

    return generate_command(*_context(args), args)


def cmd_chat(args: argparse.Namespace) -> int:
    from londinium.infer.commands import chat_command

    return chat_command(*_context(args), args)


def cmd_serve(args: argparse.Namespace) -> int:
    from londinium.serve.server import serve

    ws, cfg = _context(args)
    for flag in ("checkpoint", "host", "port", "api_key", "model_name", "device", "context"):
        if getattr(args, flag) is not None:
            setattr(cfg.serve, flag, getattr(args, flag))
    if args.weight_dtype is not None:
        cfg.generate.weight_dtype = args.weight_dtype  # the server generates as [generate] says
    if args.draft is not None:
        cfg.generate.draft_run = args.draft
    if args.memory_budget is not None:
        cfg.serve.memory_budget_mb = args.memory_budget
    return serve(ws, cfg, run=args.run or "", export=args.export or "")


def cmd_export(args: argparse.Namespace) -> int:
    from londinium.export.run import export_run

    ws, cfg = _context(args)
    export_run(ws, cfg, run=args.run, checkpoint=args.checkpoint, fmt=args.format, dtype=args.dtype, out=args.out, force=args.force)
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from londinium.index.build import build_index

    ws, cfg = _context(args)
    build_index(ws, cfg, force=args.force)
    return 0


def cmd_index_vectors(args: argparse.Namespace) -> int:
    from londinium.retrieve.vectors import build_vectors

    ws, cfg = _context(args)
    build_vectors(ws, cfg, force=args.force)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import json

    from londinium.retrieve.embedders import open_embedder

    ws, cfg = _context(args)
    texts = args.text
    if any(not t.strip() for t in texts):
        raise LondiniumError("embed: a text is empty; give some words")
    embedder = open_embedder(ws, cfg)
    vectors = embedder.embed(texts)
    if args.format == "json":
        print(json.dumps({"model": embedder.name, "dim": embedder.dim,
                          "data": [{"text": t, "embedding": [round(float(x), 6) for x in v]} for t, v in zip(texts, vectors)]}))
    else:
        for t, v in zip(texts, vectors):
            print(f"{embedder.name} [{embedder.dim}] {' '.join(f'{x:.4f}' for x in v[:8])} ... | {t}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    import json

    from londinium.retrieve.answer import ask, local_generator, openai_generator, render_answer
    from londinium.retrieve.retriever import Retriever

    ws, cfg = _context(args)
    if args.answer:
        cfg.retrieve.answer = args.answer
    if args.base_url or args.model:
        if not (args.base_url and args.model):
            raise LondiniumError("ask: --base-url and --model go together (an OpenAI-compatible server and its model id)")
        cfg.retrieve.answer = "generate"
    retriever = Retriever.load(ws, cfg, args.mode)
    generator = None
    if cfg.retrieve.answer == "generate":
        generator = (openai_generator(args.base_url, args.model, os.environ.get("OPENAI_API_KEY", ""), cfg.generate.max_tokens) if args.base_url
                     else local_generator(ws, cfg, run=args.run or ""))
    answer = ask(retriever, args.question, k=args.k, mode=cfg.retrieve.answer, generator=generator, retrieval_mode=args.mode,
                 source=args.source, split=args.split, period_from=args.period_from, period_to=args.period_to)
    if args.format == "json":
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(render_answer(answer), end="")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import json

    from londinium.index.search import CorpusIndex, render_hits

    ws, cfg = _context(args)
    hits = CorpusIndex.load(ws, cfg.index.snippet_chars).search(
        args.query, k=args.k, source=args.source, split=args.split, period_from=args.period_from, period_to=args.period_to)
    if args.format == "json":
        print(json.dumps({"query": args.query, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False, indent=2))
    else:
        print(render_hits(args.query, hits), end="")
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    from londinium.mcp.server import serve_mcp

    ws, cfg = _context(args)
    for name in ("run", "checkpoint", "device", "api_key"):
        if getattr(args, name) is not None:
            setattr(cfg.serve, name, getattr(args, name))
    for name in ("host", "port"):
        if getattr(args, name) is not None:
            setattr(cfg.mcp, name, getattr(args, name))
    serve_mcp(ws, cfg, http=args.http)
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    import shlex

    from londinium.agent import run_agent
    from londinium.agent.endpoint import model_endpoint

    ws, cfg = _context(args)
    options = ["-w", str(ws.root), *(["-c", _config_path(args)] if _config_path(args) else []),
               *(x for o in args.overrides for x in ("--set", o))]
    mcp = args.mcp or [shlex.join([sys.executable, "-m", "londinium", "mcp", *options])]
    api_key = os.environ.get("OPENAI_API_KEY", "unused")
    served = [*options, *(["--context", str(args.context)] if args.context is not None else [])]
    with model_endpoint(args.model or cfg.serve.run or cfg.train.run_name, served, args.model_name, api_key) as (url, name):
        result = run_agent(args.task, url, name, mcp, max_steps=args.max_steps, transcript=args.transcript,
                           tools=args.tool or None, api_key=api_key, max_tokens=args.max_tokens, seed=args.seed)
    print(result.answer)
    print(f"({result.steps} steps, ended by {result.stopped.replace('_', ' ')}"
          f"{'; transcript: ' + args.transcript if args.transcript else ''})", file=sys.stderr)
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from londinium.bench.report import compare, load_results, render_table
    from londinium.bench.serve_bench import BenchError, BenchSpec, bench_serve, parse_goodput, parse_levels

    if args.compare:
        print(compare(*(load_results(p) for p in args.compare)), end="")
        return 0
    if not args.base_url:
        raise BenchError("--base-url URL is required (e.g. http://127.0.0.1:8000/v1), or --compare A.json B.json")
    from londinium.bench.report import check_bench_target

    ws, _ = _context(args)
    check_bench_target(ws, args.name)  # now, not after minutes of load
    spec = BenchSpec(base_url=args.base_url, model=args.model or "", num_prompts=args.num_prompts,
                     levels=parse_levels(args.concurrency, args.max_concurrency, args.request_rate),
                     input_len=args.input_len, output_len=args.output_len, range_ratio=args.range_ratio,
                     prompts_file=args.prompts or "", seed=args.seed, warmup=args.warmup, burstiness=args.burstiness,
                     goodput=parse_goodput(args.goodput), timeout_s=args.timeout, name=args.name)
    with ws.lock(f"bench/{spec.name}"):
        results = bench_serve(ws, spec, api_key=args.api_key or "")
    print(render_table(results), end="")
    for lv in results["levels"]:
        for msg, n in lv["errors"].items():
            print(f"{lv['label']}: {n} failed: {msg}")
    print(f"bench: wrote {ws.bench_dir(spec.name)}/ (results.json, report.md, throughput.png, latency.png)")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from londinium.pipeline import QUICKSTART_PRESET, quickstart

    ws, cfg = _context(args)
    if not cfg.preset:  # quickstart means a small model on a laptop, unless the user chose a preset
        args.preset = QUICKSTART_PRESET
        ws, cfg = _context(args)
    quickstart(ws, cfg, force=args.force, minutes=args.minutes)
    return 0


# ---- parser --------------------------------------------------------------------------------------


def minutes_help() -> str:
    """quickstart --minutes's help, with the tiny preset's steps read from the preset itself."""
    from londinium.config import PRESETS, SftConfig
    from londinium.pipeline import SFT_SHARE

    tiny = PRESETS["tiny"]
    sft_steps = tiny.get("sft", {}).get("max_steps", SftConfig().max_steps)
    # argparse %-formats help strings: a percent sign is written %%
    return (f"training budget in minutes, {100 * (1 - SFT_SHARE):.0f}%% for pre-training and {100 * SFT_SHARE:.0f}%% for fine-tuning the "
            f"assistant: the steps are planned from the pace measured on this machine so that each whole schedule "
            f"(warm-up, decay) fits its share; without it the preset's fixed, reproducible steps "
            f"(tiny: {tiny['train']['max_steps']:,} pre-training, {sft_steps:,} fine-tuning)")

Handler = Callable[[argparse.Namespace], int]


def _corpus_filters(p: argparse.ArgumentParser) -> None:
    """The filters `search` and `ask` share, and their output format."""
    p.add_argument("--source", default=None, help="only documents of this source id (the sources registry's ids)")
    p.add_argument("--split", default=None, choices=["train", "val", "test"], help="only documents of this split")
    p.add_argument("--period-from", type=int, default=None, metavar="YEAR", help="only documents whose period reaches this year or later")
    p.add_argument("--period-to", type=int, default=None, metavar="YEAR", help="only documents whose period starts by this year")
    p.add_argument("--format", choices=["text", "json"], default="text", help="text (default) or JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="londinium", description="Build a small GPT from scratch on your own corpus, export it, search its corpus, serve it (OpenAI-compatible HTTP API, MCP).")
    stages = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")

    def verb(stage_parser: argparse._SubParsersAction, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = stage_parser.add_parser(name, help=help, description=help)
        _common(p)
        p.set_defaults(handler=handler)
        return p

    def stage(name: str, help: str) -> argparse._SubParsersAction:
        p = stages.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest="verb", required=True, metavar="<verb>")

    config = stage("config", "inspect the configuration")
    verb(config, "show", cmd_config_show, "print the effective config as TOML, one comment per field")

    corpus = stage("corpus", "sources -> clean, deduplicated, split corpus")
    p = verb(corpus, "build", cmd_corpus_build, "fetch, extract, clean, filter, deduplicate, segment and split the sources")
    p.add_argument("--strict", action="store_true", help="fail on the first bad source or file")

    tokenizer = stage("tokenizer", "corpus -> lossless byte-level BPE tokenizer + report")
    verb(tokenizer, "train", cmd_tokenizer_train, "train the tokenizer on the train split and write its report (vs GPT-2)")

    data = stage("data", "corpus + tokenizer -> token shards for training")
    verb(data, "prepare", cmd_data_prepare, "encode every split into shards/<split>.bin + .meta.json")

    p = stages.add_parser("train", help="shards -> checkpoints: train the GPT (under torchrun for DDP)",
                          description="train the GPT on the shards for train.max_steps steps, or for a budget that sizes the "
                                      "schedule: --set train.max_minutes=M (steps planned from the pace measured here) or "
                                      "--set train.max_tokens=N; the same command runs DDP under torchrun --nproc_per_node=N")
    _common(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its newest valid checkpoint, with the config it was trained with "
                        "(--preset/--config/--set change it on purpose)")
    # --run-name too: under torchrun, `--run` is rejected by torchrun's own parser as ambiguous.
    p.add_argument("--run", "--run-name", dest="run", default=None, metavar="NAME",
                   help="run name: runs/NAME/ (default: train.run_name, 'main'); write --run-name under torchrun")
    p.set_defaults(handler=cmd_train)

    p = stages.add_parser("sft", help="a trained run + conversations -> an assistant: supervised fine-tuning",
                          description="fine-tune a trained run on conversations (the task set, your JSONL) with the loss on the "
                                      "assistant's answers only, into runs/<BASE>-sft/ (docs/sft.md); under torchrun for DDP")
    _common(p)
    _from_base(p, "sft", "fine-tune", "SFT")
    p.add_argument("--tasks", action="append", default=[], metavar="TASK",
                   help="task-set task to train on, or 'default' (the default mix) or 'none' (repeatable; default: sft.tasks, "
                        "none when --data is given alone)")
    p.add_argument("--data", action="append", default=[], metavar="FILE",
                   help='JSONL of {"messages": [...]} or {"prompt", "completion"} (repeatable)')
    p.set_defaults(handler=cmd_sft)

    p = stages.add_parser("rl", help="an SFT run + tasks with checkable answers -> reinforcement learning (GRPO)",
                          description="train a run on the rewards of its sampled answers to task prompts: groups of samples per "
                                      "prompt, group-relative advantages, the clipped policy loss and a KL to the base ([rl]), into "
                                      "runs/<BASE>-rl/ with pass@k on held-out prompts (docs/rl.md); under torchrun for DDP")
    _common(p)
    _from_base(p, "rl", "train, usually an SFT run", "RL")
    p.add_argument("--task", action="append", default=[], metavar="TASK", help="task-set task whose train items are the prompts (repeatable; default: rl.tasks)")
    p.add_argument("--reward", action="append", default=[], metavar="SPEC",
                   help="your reward: 'module:function' (every task) or 'TASK=module:function', optionally '@WEIGHT'; repeated, they are summed (default: each task's checker)")
    p.set_defaults(handler=cmd_rl)

    p = stages.add_parser("distill", help="a trained run as teacher -> a smaller student: knowledge distillation",
                          description="train a student on the shards against a frozen teacher run's softened predictions "
                                      "(alpha x CE + (1 - alpha) x T^2 x KL, [distill]) into runs/<TEACHER>-student/ "
                                      "(docs/training.md, Distillation); the student's shape from --student-preset or --set model.*")
    _common(p)
    p.add_argument("--teacher", default=None, metavar="RUN", help="the teacher run (default: distill.teacher)")
    p.add_argument("--teacher-checkpoint", default=None, metavar="C",
                   help="the teacher's checkpoint: 'best', 'latest', 'step-N' or a directory (default: distill.teacher_checkpoint)")
    p.add_argument("--student-preset", dest="preset", default=None, metavar="P",
                   help="the student's preset (tiny, small, slm, regular): --preset under the name that says whose")
    p.add_argument("--name", default=None, metavar="NAME", help="name of the student run (default: distill.run_name, else <TEACHER>-student)")
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="read the teacher from its top-K cache (one teacher pass over the train shard, written once, reused; "
                        "default: distill.top_k, 0: on the fly)")
    p.add_argument("--cache-only", action="store_true", help="only write the teacher's top-K cache (needs --top-k), train no student")
    p.add_argument("--sft", default=None, metavar="BASE",
                   help="distil on the SFT data ([sft]): the student fine-tunes BASE on the conversations, loss on the answers")
    p.add_argument("--resume", action="store_true", help="continue the student run from its newest valid checkpoint, with its config")
    p.set_defaults(handler=cmd_distill)

    tasks = stage("tasks", "corpus -> tasks with answers a program checks (fine-tuning data, task evaluation)")
    p = verb(tasks, "build", cmd_tasks_build, "cut the task set from the corpus splits into tasks/<task>/items.jsonl and its card tasks/card.md")
    p.add_argument("--task", action="append", default=[], metavar="NAME", help="cut only this task (repeatable; default: tasks.tasks, else the corpus's default mix)")

    model = stage("model", "the GPT architecture")
    verb(model, "info", cmd_model_info, "parameters, FLOPs per token and memory estimate (weights, AdamW, activations, KV cache)")
    p = verb(model, "memory", cmd_model_memory, "memory of generation and serving: weights, KV cache, activations, prefix cache")
    p.add_argument("--context", type=int, default=None, metavar="N", help="tokens per sequence (default: the model's context)")
    p.add_argument("--batch", type=int, default=None, metavar="B", help="sequences decoded together (default: serve.max_running)")
    p.add_argument("--weight-dtype", default=None, choices=WEIGHT_DTYPES, help="the linear layers' weights (default: generate.weight_dtype)")
    p.add_argument("--kv-dtype", default=None, choices=KV_DTYPES, help="the KV cache (default: generate.kv_dtype)")

    p = stages.add_parser("eval", help="a checkpoint -> report card: perplexity, cloze, probes, contamination, samples",
                          description="evaluate a trained run into eval/<run>/report.md and results.json, "
                                      "or compare two evaluated runs side by side")
    _common(p)
    p.add_argument("--run", default=None, metavar="NAME", help="run to evaluate (default: train.run_name, 'main')")
    p.add_argument("--checkpoint", default=None, help="'best', 'latest' or a checkpoint directory (default: eval.checkpoint)")
    p.add_argument("--text", action="append", default=[], metavar="FILE", help="also report perplexity on this UTF-8 text file (repeatable)")
    p.add_argument("--compare", nargs=2, default=None, metavar=("RUN_A", "RUN_B"), help="print and write two evaluated runs side by side")
    p.add_argument("--tasks", action="store_true", help="also answer the task set (built first if needed) by generation: scores with baselines and format compliance")
    p.add_argument("--shots", type=int, default=None, metavar="K", help="solved examples before each task question (default: tasks.shots for a base model, 0 for an SFT run)")
    p.set_defaults(handler=cmd_eval)

    from londinium.infer.options import add_generate_arguments, add_model_arguments, add_sampling_arguments

    p = stages.add_parser("generate", help="a checkpoint -> text, with every sampling control",
                          description="generate text from a trained checkpoint: sampling, beam search, stop strings, JSON output")
    _common(p)
    add_generate_arguments(p)
    p.set_defaults(handler=cmd_generate)

    p = stages.add_parser("chat", help="interactive REPL: the model continues your text, streaming",
                          description="an interactive REPL that streams the model's continuation; /set, /reset, /help inside")
    _common(p)
    add_model_arguments(p)
    add_sampling_arguments(p)
    p.set_defaults(handler=cmd_chat)

    p = stages.add_parser("serve", help="an OpenAI-compatible HTTP server (completions, chat, streaming, metrics)",
                          description="serve a trained run over the OpenAI HTTP API with continuous batching (docs/serving.md)")
    _common(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", default=None, metavar="NAME", help="run to serve (default: serve.run, else train.run_name)")
    which.add_argument("--export", default=None, metavar="DIR", help="serve a `londinium export` directory (transformers layout) instead")
    p.add_argument("--checkpoint", default=None, help="'best', 'latest' or a checkpoint directory (default: serve.checkpoint)")
    p.add_argument("--host", default=None, help="address to bind (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default: serve.port, 8000)")
    p.add_argument("--api-key", default=None, metavar="KEY", help="require 'Authorization: Bearer KEY' (default: serve.api_key or $LONDINIUM_API_KEY)")
    p.add_argument("--model-name", default=None, metavar="NAME", help="model id clients send (default: serve.model_name, else the run name)")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda, auto (default: serve.device)")
    p.add_argument("--context", type=int, default=None, metavar="N",
                   help="serve N tokens of context, past the trained one for rotary models, with a warning "
                        "(default: serve.context, 0: as trained; serve.rope_scaling maps the new positions)")
    p.add_argument("--weight-dtype", default=None, choices=WEIGHT_DTYPES,
                   help="the linear layers' weights: float32, float16 or int8 (CPU; default: generate.weight_dtype)")
    p.add_argument("--draft", default=None, metavar="RUN",
                   help="speculative decoding while one request runs: a smaller run of this workspace proposes tokens (default: generate.draft_run)")
    p.add_argument("--memory-budget", type=float, default=None, metavar="MIB",
                   help="size serve.max_running from this many MiB (`londinium model memory`; default: serve.memory_budget_mb, 0: off)")
    p.set_defaults(handler=cmd_serve)
    p = stages.add_parser("export", help="a checkpoint -> a transformers directory or a GGUF file",
                          description="export a trained checkpoint as a Hugging Face transformers directory (weights, config, "
                                      "tokenizer, chat template, model card) or a GGUF file for llama.cpp; see docs/export.md")
    _common(p)
    p.add_argument("--run", default=None, metavar="NAME", help="run to export (default: export.run, else train.run_name)")
    p.add_argument("--checkpoint", default=None, metavar="WHICH", help="best, latest, step-N or a checkpoint directory (default: export.checkpoint)")
    p.add_argument("--out", default=None, metavar="PATH", help="output directory (hf) or file (gguf); default exports/<run>-step-<N>[.gguf]")
    p.add_argument("--format", default=None, choices=["hf", "gguf"], help="hf (transformers, vLLM) or gguf (llama.cpp); default export.format")
    p.add_argument("--dtype", default=None, metavar="DTYPE", help="float32, bfloat16, float16 (hf); float32, float16, q8_0 (gguf)")
    p.set_defaults(handler=cmd_export)
    index = stage("index", "corpus -> search index (BM25; words folded as the corpus profile says, index.folding)")
    verb(index, "build", cmd_index_build, "index every corpus document for `londinium search` and the MCP search tools")

    verb(index, "vectors", cmd_index_vectors, "embed every passage of the indexed documents for hybrid retrieval and `ask` "
         "(retrieve.embedder; 'corpus' learns the embedder from the corpus first)")

    p = stages.add_parser("embed", help="embeddings of texts with retrieve.embedder",
                          description="print the embedding of each text (retrieve.embedder; the server has POST /v1/embeddings)")
    _common(p)
    p.add_argument("text", nargs="+", help="texts to embed")
    p.add_argument("--format", choices=["text", "json"], default="text", help="text (first dimensions) or JSON (all)")
    p.set_defaults(handler=cmd_embed)

    p = stages.add_parser("ask", help="answer a question from the corpus, with checked citations, or refuse",
                          description="retrieve passages (retrieve.mode), refuse when they do not support an answer, else "
                                      "quote the best passage (extractive) or let a model answer from numbered passages (docs/rag.md)")
    _common(p)
    p.add_argument("question", help="the question, in any spelling")
    p.add_argument("--k", type=int, default=None, help="passages to retrieve and cite at most (default: retrieve.k)")
    p.add_argument("--mode", default=None, choices=["bm25", "vector", "hybrid"], help="retrieval (default: retrieve.mode)")
    p.add_argument("--answer", default=None, choices=["extractive", "generate"], help="answer mode (default: retrieve.answer)")
    p.add_argument("--base-url", default=None, metavar="URL", help="generate with this OpenAI-compatible server ($OPENAI_API_KEY is sent)")
    p.add_argument("--model", default=None, help="the model id for --base-url")
    p.add_argument("--run", default=None, metavar="NAME", help="generate with this trained run (default: serve.run, else train.run_name)")
    _corpus_filters(p)
    p.set_defaults(handler=cmd_ask)

    p = stages.add_parser("search", help="search the corpus: best-matching documents with snippet, offsets and provenance",
                          description="search the corpus index (build it with `londinium index build`); "
                                      "words match as the index folded them (case only, or early-modern spellings under period-london)")
    _common(p)
    p.add_argument("query", help="words to search for")
    p.add_argument("--k", type=int, default=10, help="results at most (default 10)")
    _corpus_filters(p)
    p.set_defaults(handler=cmd_search)

    p = stages.add_parser("mcp", help="serve the model and corpus to MCP hosts (tools, resources, prompts)",
                          description="an MCP server over stdio (default; for hosts that spawn it) or streamable HTTP (--http); "
                                      "the model is [serve]'s run and checkpoint, see docs/mcp.md")
    _common(p)
    p.add_argument("--http", action="store_true", help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    p.add_argument("--host", default=None, help="address for --http (default: mcp.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port for --http (default: mcp.port, 8001)")
    p.add_argument("--api-key", default=None, help="bearer key HTTP clients must send (default: serve.api_key or $LONDINIUM_API_KEY)")
    p.add_argument("--run", default=None, metavar="NAME", help="training run to serve (default: serve.run, else train.run_name)")
    p.add_argument("--checkpoint", default=None, help="'best', 'latest' or a checkpoint directory (default: serve.checkpoint)")
    p.add_argument("--device", default=None, help="torch device (default: serve.device, cpu)")
    p.set_defaults(handler=cmd_mcp)

    p = stages.add_parser("agent", help="a tool-calling agent over MCP servers and an OpenAI-compatible model",
                          description="thought -> tool call -> observation until final_answer or --max-steps (docs/agents.md)")
    _common(p)
    p.add_argument("task", help="what the agent should do or answer")
    p.add_argument("--model", default=None, metavar="URL|RUN", help="an OpenAI-compatible base URL (http://.../v1), or a "
                   "trained run served for the task by `londinium serve` (default: serve.run, else train.run_name)")
    p.add_argument("--model-name", default=None, help="the model id to send (default: the URL's first model, or the run)")
    p.add_argument("--mcp", action="append", default=[], metavar="CMD|URL", help="an MCP server: a command line spoken to "
                   "over stdio, or a streamable-HTTP URL (repeatable; default: `londinium mcp` on this workspace)")
    p.add_argument("--tool", action="append", default=[], metavar="NAME", help="offer only this MCP tool (repeatable; default: all)")
    p.add_argument("--context", type=int, default=None, metavar="N", help="a run is served with N tokens of context "
                   "(`londinium serve --context`; default: serve.context)")
    p.add_argument("--max-steps", type=int, default=8, metavar="N", help="tool-calling steps at most (default 8)")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N", help="tokens per model reply (default: the server's)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed sent with every step")
    p.add_argument("--transcript", default=None, metavar="FILE", help="write every thought, call, observation and the answer as JSONL")
    p.set_defaults(handler=cmd_agent)

    bench = stage("bench", "measure a served model (vLLM's serving-benchmark figures)")
    p = verb(bench, "serve", cmd_bench_serve, "load an OpenAI-compatible server: TTFT, TPOT, ITL, E2EL percentiles, "
             "throughput and goodput per concurrency, into bench/<name>/ (docs/serving.md)")
    p.add_argument("--base-url", default=None, metavar="URL", help="the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", default=None, help="model id to send (default: the first of GET /models)")
    p.add_argument("--api-key", default=None, metavar="KEY", help="sent as 'Authorization: Bearer KEY'")
    p.add_argument("--concurrency", default=None, metavar="LIST", help="a sweep: one level per concurrency cap, e.g. 1,4,16")
    p.add_argument("--max-concurrency", type=int, default=None, metavar="N", help="one level, at most N requests in flight")
    p.add_argument("--request-rate", type=float, default=None, metavar="R", help="arrivals per second (gamma process; default: all at once)")
    p.add_argument("--burstiness", type=float, default=1.0, metavar="B", help="gamma shape of the arrivals: 1 is Poisson, < 1 burstier (default 1)")
    p.add_argument("--num-prompts", type=int, default=32, metavar="N", help="measured requests per level (default 32)")
    p.add_argument("--input-len", type=int, default=64, metavar="TOKENS", help="prompt tokens, held-out prompts (default 64)")
    p.add_argument("--output-len", type=int, default=32, metavar="TOKENS", help="max_tokens per request, fixed with ignore_eos (default 32)")
    p.add_argument("--range-ratio", type=float, default=0.0, metavar="R", help="sample lengths uniformly in len*(1-R) .. len*(1+R) (default 0: fixed)")
    p.add_argument("--prompts", default=None, metavar="FILE.jsonl", help='prompts from a JSONL file of {"prompt": ..., "output_len"?: N} instead of corpus/val.jsonl')
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt, length and arrival draws (default 0)")
    p.add_argument("--warmup", type=int, default=1, metavar="N", help="requests sent first and not measured (default 1)")
    p.add_argument("--goodput", nargs="+", default=[], metavar="METRIC:MS", help="SLOs for goodput, e.g. ttft:500 tpot:50 (ttft, tpot, e2el)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="seconds one request may take (default 600)")
    p.add_argument("--name", default="serve", help="results go to bench/NAME/ (default: serve)")
    p.add_argument("--compare", nargs=2, default=None, metavar=("A.json", "B.json"), help="print two results files side by side with ratios, run nothing")

    from londinium.gateway.cli import add_gateway_parser

    add_gateway_parser(stages)

    p = stages.add_parser("quickstart", help="run every stage on corpus.sources (default: the embedded corpus), tiny preset: "
                          "a base model, then an assistant fine-tuned on tasks cut from the corpus")
    _common(p)
    p.add_argument("--minutes", type=float, default=None, help=minutes_help())
    p.set_defaults(handler=cmd_quickstart)
    return parser


# The exit status of a program that SIGPIPE ended (128 + 13), what `yes | head` leaves: scripts
# with `set -o pipefail` see londinium as they see grep or cat. (Python's own default would be 1.)
EXIT_BROKEN_PIPE = 141


class _Output:
    """sys.stdout or sys.stderr while a command runs. When the reader goes away (`| head` exited),
    the file descriptor is pointed at /dev/null (as Python's documentation advises) so nothing
    raises again, even at exit. With `stop`, that write still raises BrokenPipeError: the command
    only prints, and stops. Without it, the work goes on silently and is recorded: a stage's record
    never depends on its output being read. Any other failed write (`> /dev/full`) is one line naming
    the stream, not the workspace's disk, and exit 2."""

    def __init__(self, stream: Any, stop: bool, name: str):
        self._stream, self._stop, self._name, self.closed_by_reader = stream, stop, name, False

    def _reader_gone(self) -> None:
        self.closed_by_reader = True
        self._reader_gone_quietly()
        if self._stop:
            raise BrokenPipeError

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return self._stream.write(text)
        except OSError as e:
            raise self._unwritable(e) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()
            self._stream.flush()
        except OSError as e:
            raise self._unwritable(e) from None

    def _unwritable(self, e: OSError) -> LondiniumError:
        # Not the workspace's disk: the place the output was sent (`> /dev/full`, a full log disk).
        # The output is dropped from here on, so that the error line itself can still be written.
        self._reader_gone_quietly()
        return LondiniumError(f"cannot write to standard {self._name} ({e.strerror or e}); "
                              "send it somewhere with room (or to /dev/null)")

    def _reader_gone_quietly(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# Commands whose only product is what they print: with no reader left they stop at once.
_ONLY_PRINT = ("cmd_config_show", "cmd_model_info", "cmd_model_memory", "cmd_generate", "cmd_chat", "cmd_search", "cmd_embed", "cmd_ask")


def _disk_full_line(args: argparse.Namespace, e: BaseException) -> str:
    """A full disk that no writer named (a library's own write): name the file if the error has it,
    else the output or workspace of the command."""
    from londinium.files import disk_full

    err: BaseException | None = e
    while err is not None and not getattr(err, "filename", None):
        err = err.__cause__ or err.__context__
    path = getattr(err, "filename", None) or getattr(args, "out", None) or args.workspace
    return str(disk_full(Path(path).absolute(), hint="choose another --workspace"))


def _open_standard_streams() -> None:
    """Point a standard stream that was closed when londinium started (`londinium ... <&- >&-`, some
    service managers) at /dev/null. Python leaves sys.stdin/stdout/stderr None then, and the
    descriptor free: the next file opened (a checkpoint being written) would take it, and whatever
    a library prints would land inside that file."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False,
                                    errors="backslashreplace" if fd == 2 else "strict", buffering=1 if fd == 2 else -1))


# Arguments that are text (checked, and explained, as text); the rest name files and folders.
_TEXT_ARGUMENTS = {"query": "the query", "stop": "--stop", "overrides": "--set"}


def _refuse_non_utf8(args: argparse.Namespace) -> None:
    """Every argument must be UTF-8: a name or path with other bytes (which Python hands over as
    lone surrogates) cannot be written into the manifest, a config or a JSON record, and the
    libraries under londinium (safetensors, tokenizers) refuse it with misleading errors. `--prompt`
    is checked by generate itself, which numbers the prompts."""
    from londinium.infer.user_text import check_text

    for dest, value in vars(args).items():
        if dest == "prompt":
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, (str, Path)):
                if dest in _TEXT_ARGUMENTS:
                    check_text(str(v), _TEXT_ARGUMENTS[dest])
                else:
                    check_text(str(v), f"--{dest.replace('_', '-')}",
                               fix="give a path whose name is UTF-8 (rename it, e.g. with convmv)")


def main(argv: list[str] | None = None) -> int:
    from londinium.files import out_of_space

    _open_standard_streams()
    args = build_parser().parse_args(argv)
    outputs: list[_Output] = []
    if args.handler.__name__ != "cmd_mcp":  # MCP speaks its protocol on stdout: leave it to the SDK
        stop = args.handler.__name__ in _ONLY_PRINT
        outputs = [_Output(sys.stdout, stop, "output"), _Output(sys.stderr, stop, "error")]
        sys.stdout, sys.stderr = outputs
    try:
        _refuse_non_utf8(args)
        status = args.handler(args)
        sys.stdout.flush()  # a full or closed output shows here, where it can still be reported
    except BrokenPipeError:
        status = EXIT_BROKEN_PIPE
    except LondiniumError as e:
        print(f"londinium: error: {e}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("londinium: interrupted; finished stages are kept, run the command again to continue", file=sys.stderr)
        status = 130
    except Exception as e:
        if not out_of_space(e):
            raise
        print(f"londinium: error: {_disk_full_line(args, e)}", file=sys.stderr)
        status = 2
    finally:
        if outputs:
            sys.stdout, sys.stderr = (o._stream for o in outputs)
    if any(o.closed_by_reader for o in outputs) and status == 0:
        return EXIT_BROKEN_PIPE
    return status


if __name__ == "__main__":
    sys.exit(main())
