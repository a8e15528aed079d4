"""What `londinium generate` and `londinium chat` do: load the run's engine, then generate or chat.

The flags and their mapping onto SamplingParams live in `options.py` (no torch import there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from londinium.config import Config
from londinium.errors import LondiniumError
from londinium.files import loads_json, path_kind
from londinium.infer.engine import Engine
from londinium.infer.options import sampling_params
from londinium.infer.user_text import check_text, decode_line
from londinium.workspace import Workspace


def load_engine(ws: Workspace, cfg: Config, args: argparse.Namespace) -> tuple[Engine, Config]:
    """The engine for the chosen run and checkpoint, and the config the run was trained with."""
    from londinium.model.load import load_run, serve_context

    run = args.run or cfg.generate.run or cfg.train.run_name
    which = args.checkpoint or cfg.generate.checkpoint
    device, setting = (args.device, "--device") if args.device else (cfg.generate.device, "generate.device")
    if args.weight_dtype:
        cfg.generate.weight_dtype = args.weight_dtype
    if args.draft:
        cfg.generate.draft_run = args.draft
    trained = load_run(ws, run=run, checkpoint=which, device=device, device_setting=setting)
    if args.context is not None:
        warning = serve_context(trained.model, args.context, cfg.serve.rope_scaling)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    return Engine.from_trained(trained, cfg.generate, ws), trained.config


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts of --prompt or --prompts-file, each checked to be UTF-8 text (infer/user_text.py)."""
    if args.prompt is not None:
        return [check_text(p, f"--prompt {i + 1}" if len(args.prompt) > 1 else "--prompt") for i, p in enumerate(args.prompt)]
    path: Path = args.prompts_file
    kind = path_kind(path, follow=True)
    if kind == "folder":
        raise LondiniumError(f"--prompts-file {path} is a directory; give a text or .jsonl file of prompts")
    if kind == "missing":
        raise LondiniumError(f"--prompts-file {path}: no such file")
    if kind != "file":  # a FIFO waits for a writer for ever, a device never ends: as for every file londinium reads
        raise LondiniumError(f"--prompts-file {path} is a {kind}, not a regular file; save the prompts to a file and give that")
    try:
        lines = [decode_line(raw, f"{path}:{i}") for i, raw in enumerate(path.read_bytes().splitlines(), 1)]
    except OSError as e:
        raise LondiniumError(f"--prompts-file {path}: cannot be read ({e.strerror or e})") from None
    if path.suffix != ".jsonl":
        prompts = [line for line in lines if line.strip()]
    else:
        prompts = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = loads_json(line)
            except json.JSONDecodeError as e:
                raise LondiniumError(f"{path}:{i}: not valid JSON ({e})") from None
            prompt = row.get("prompt") if isinstance(row, dict) else row
            if not isinstance(prompt, str):
                raise LondiniumError(f'{path}:{i}: expected a JSON string or an object with a "prompt" string')
            prompts.append(check_text(prompt, f"{path}:{i}"))  # a JSON \ud800 escape is no text either
    if not prompts:
        raise LondiniumError(f"--prompts-file {path} holds no prompts")
    return prompts


def generate_command(ws: Workspace, cfg: Config, args: argparse.Namespace) -> int:
    params = sampling_params(cfg, args).validate()  # before the slow part: bad flags fail at once
    prompts = read_prompts(args)
    engine, _ = load_engine(ws, cfg, args)
    print(f"londinium generate: {engine.loaded_from}", file=sys.stderr)
    streamable = len(prompts) == 1 and params.n == 1 and params.num_beams == 1 and params.best_of in (None, 1)
    if args.format == "text" and streamable:
        # One sequence: show it as it is written. The first step runs before the prompt is echoed,
        # so an error (a prompt too long, say) leaves stdout empty instead of holding half a reply.
        stream = iter(engine.stream(prompts[0], params))
        first = next(stream, None)
        sys.stdout.write(prompts[0])
        for delta in ([first] if first is not None else []):
            sys.stdout.write(delta.text)
        sys.stdout.flush()
        for delta in stream:
            sys.stdout.write(delta.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    completions = engine.generate(prompts, params)
    for i, c in enumerate(completions):
        if args.format == "json":
            print(json.dumps({"index": i, **c.to_dict()}, ensure_ascii=False))
            continue
        for choice in c.choices:
            if len(completions) > 1 or len(c.choices) > 1:
                print(f"--- prompt {i}, choice {choice.index} ({choice.finish_reason}, mean log-prob {choice.mean_logprob:.3f})")
            print(c.prompt + choice.text)
        t = c.timing
        print(f"[prompt {i}: {t.prompt_tokens} prompt tokens, {t.completion_tokens} generated, "
              f"first token {t.prefill_s * 1000:.0f} ms, {t.decode_tokens_per_s:.1f} tok/s]", file=sys.stderr)
    return 0


def chat_command(ws: Workspace, cfg: Config, args: argparse.Namespace) -> int:
    from londinium.infer.chat import ChatSession, run_chat

    params = sampling_params(cfg, args).validate()
    engine, trained_with = load_engine(ws, cfg, args)
    from londinium.train.sft_run import takes_turns

    assistant = takes_turns(trained_with)
    session = ChatSession(engine, params, window=cfg.generate.chat_window, assistant=assistant)
    how = ("A fine-tuned assistant: it answers through the chat template" if assistant
           else "A base model continues your text")
    return run_chat(session, banner=f"londinium chat: {engine.loaded_from}. {how}; /help for commands.")
