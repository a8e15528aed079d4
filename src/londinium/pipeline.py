"""The whole pipeline in order: what `londinium quickstart` runs.

Each stage skips itself when it is up to date (see `Workspace.run_stage`), so running the pipeline
again after an interruption continues where it stopped.
"""

from __future__ import annotations

import math
import time
from typing import Any

from londinium.config import Config, validate
from londinium.errors import ConfigError
from londinium.workspace import Workspace

QUICKSTART_PRESET = "tiny"
# The share of quickstart's training time given to fine-tuning the base model into an assistant:
# the tiny preset's 2,400 [sft] steps of ~884 positions against its 4,800 [train] steps of 2,048
# (docs/LOG.md 2026-12-06, "a longer SFT"); what a --minutes budget is split by, too.
SFT_SHARE = 0.18


def set_training_budget(cfg: Config, minutes: float) -> None:
    """`--minutes`: a time budget the trainer turns into steps from the pace it measures on this
    machine, so the whole schedule (warm-up, decay) fits the minutes on any machine and any preset
    (`train/pacing.py`); pre-training gets 1 - SFT_SHARE of it, fine-tuning the rest. Without it
    quickstart keeps the preset's fixed steps: those are deterministic, so their figures reproduce
    on any machine."""
    if not (math.isfinite(minutes) and 0 < minutes <= 10**7):
        raise ConfigError(f"--minutes {minutes:g}: give a positive, finite number of minutes")
    cfg.train.max_minutes = minutes * (1 - SFT_SHARE)
    cfg.sft.max_minutes = minutes * SFT_SHARE
    validate(cfg)


def assistant_eval(cfg: Config) -> Config:
    """What quickstart asks of the assistant: its held-out task answers and the plain-text bits per
    byte it kept (what fine-tuning forgot); the base's report card already has the cloze set, the
    probes and samples of continued text."""
    import copy

    cfg = copy.deepcopy(cfg)
    cfg.eval.cloze = cfg.eval.probes = False
    cfg.eval.prompts = 0
    return cfg


def fine_tune(ws: Workspace, cfg: Config, force: bool = False) -> str:
    """The task set cut from the corpus, and the trained run fine-tuned on its default mix into an
    assistant (`londinium tasks build` + `londinium sft`); returns the assistant's run name."""
    from londinium.tasks.build import build_tasks
    from londinium.train.sft_run import sft_config
    from londinium.train.trainer import train

    build_tasks(ws, cfg.tasks, force=force)
    sft = sft_config(ws, cfg)  # its base: sft.base, else train.run_name (sft_run.on_base)
    sft.train.resume = True  # as pre-training: an interrupted quickstart continues where it stopped
    with ws.lock(f"train/{sft.train.run_name}"):
        train(ws, sft, force=force)
    return sft.train.run_name


def quickstart(ws: Workspace, cfg: Config, force: bool = False, minutes: float | None = None) -> None:
    """Run every stage on the configured sources (default: the embedded period-English corpus)."""
    from londinium.corpus.build import build_corpus
    from londinium.data.shards import prepare_shards
    from londinium.eval.run import evaluate
    from londinium.export.card import load_snippet
    from londinium.export.run import export_run
    from londinium.index.build import build_index
    from londinium.tokenizer.train import train_tokenizer
    from londinium.train.sft_data import DataError
    from londinium.train.trainer import train

    if minutes is not None:
        set_training_budget(cfg, minutes)
    t0 = time.time()
    print(f"londinium quickstart: workspace {ws.root}, preset {cfg.preset}")
    build_corpus(ws, cfg.corpus, force=force)
    build_index(ws, cfg, force=force)  # corpus search, for `londinium search` and the MCP tools
    train_tokenizer(ws, cfg.tokenizer, cache_dir=cfg.corpus.cache_dir, download_timeout_s=cfg.corpus.download_timeout_s, force=force)
    prepare_shards(ws, cfg.data, force=force)
    cfg.train.resume = True  # an interrupted quickstart continues its training run where it stopped
    with ws.lock(f"train/{cfg.train.run_name}"):  # the other stages lock themselves (Workspace.run_stage)
        trained = train(ws, cfg, force=force)
    results = evaluate(ws, cfg, run=cfg.train.run_name, force=force)
    try:
        assistant: str | None = fine_tune(ws, cfg, force=force)
    except DataError as e:
        if cfg.sft.data:  # the user's own conversations are at fault: stop and say which line
            raise
        # A corpus whose task conversations cannot be trained on (e.g. all longer than a short
        # model.context) still has its base model: say why there is no assistant, do not fail.
        assistant, no_assistant = None, str(e)
    answers = evaluate(ws, assistant_eval(cfg), run=assistant, force=force, tasks=True) if assistant else {}
    exported = assistant or cfg.train.run_name
    # float32 whatever [export] says: the one export every tool reads (a GGUF file is one command away).
    # A model that maps onto no transformers class is a legitimate experiment: say so, do not fail.
    try:
        export = export_run(ws, cfg, run=exported, fmt="hf", dtype="float32", force=force)
    except ConfigError as e:
        export, why = None, str(e)
    print(f"\nDone in {time.time() - t0:.0f} s.")
    print(f"  base model ({cfg.train.run_name}):")
    print(summary_lines(results))
    if assistant:
        print(f"  assistant ({assistant}, the base fine-tuned on tasks cut from the corpus):")
        print(assistant_lines(answers, results))
    else:
        print(f"  assistant: skipped: {no_assistant}")
    print(f"  data card: {ws.corpus_report_md}")
    print(f"  tokenizer report: {ws.tokenizer_report_md}")
    if assistant:
        print(f"  task set: {ws.root / 'tasks' / 'card.md'}")
    print(f"  training run: {trained.run_dir} (loss plot {ws.loss_plot(cfg.train.run_name)})")
    print(f"  report card: {ws.eval_report_md(cfg.train.run_name)}")
    if assistant:
        print(f"  assistant's run and report card: {ws.run_dir(assistant)}, {ws.eval_report_md(assistant)}")
        print(f"  talk to the assistant: londinium chat --run {assistant}   serve it: londinium serve --run {assistant}")
    if export is None:
        print(f"  export: skipped: {why}")
    else:
        print(f"  export (transformers, vLLM): {export}; load it in Python with\n")
        print("\n".join("    " + line for line in load_snippet(export).splitlines()))


def assistant_lines(answers: dict[str, Any], base: dict[str, Any]) -> str:
    """The assistant's held-out task scores against their baselines, its format compliance, and the
    plain-text bits per byte it kept (what fine-tuning forgot), as printed at the end of quickstart."""
    out = []
    ppl, was = answers.get("perplexity", {}).get("val", {}), base.get("perplexity", {}).get("val", {})
    if "total" in ppl and "total" in was:
        now, before = ppl["total"]["bits_per_byte"], was["total"]["bits_per_byte"]
        out.append(f"    val: {now:.3f} bits per byte on plain text ({now - before:+.3f} against the base model)")
    tasks = answers.get("tasks", {}).get("tasks", {})
    rows, formats = [], []
    for name, block in tasks.items():
        s = block["splits"].get("test", {}).get("summary") or {}
        if s.get("n"):
            unit = "chrF" if block["metric"] == "chrf" else ""
            rows.append(f"{name} {100 * s['score']:.0f}{unit and ' ' + unit} ({block['baseline']} {100 * s['baseline']:.0f})")
            formats.append((s["format"], s["n"]))
    if rows:
        n = sum(k for _, k in formats)
        out.append(f"    held-out test tasks, zero-shot (baseline): {'; '.join(rows)}")
        out.append(f"    answers in the trained format (ending its turn): {sum(f * k for f, k in formats) / n:.1%} of {n}")
    return "\n".join(out)


def summary_lines(results: dict[str, Any], samples: int = 3) -> str:
    """What the model reached, and a few of its samples, as printed at the end of quickstart."""
    out = []
    ppl = results.get("perplexity", {})
    for split in ("val", "test"):
        if split in ppl:
            t = ppl[split]["total"]
            out.append(f"  {split}: {t['bits_per_byte']:.3f} bits per byte, perplexity {t['perplexity']:.1f}")
    cloze = results.get("cloze", {}).get("summary", {}).get("overall", {})
    if cloze.get("n"):
        out.append(f"  cloze: {cloze['accuracy']:.1%} ± {cloze['accuracy_se']:.1%} correct of {cloze['n']} (chance {cloze['chance']:.0%}), "
                   f"margin {cloze['margin']:+.2f} ± {cloze['margin_se']:.2f} nats")
        out.append("    (a cloze item asks which of a few words of the corpus comes next in a held-out passage; "
                   "± is one standard error)")
    probes = results.get("probes", {}).get("summary", {}).get("overall", {})
    if probes.get("n"):
        out.append(f"  probes: {probes['accuracy']:.0%} correct of {probes['n']} (chance {probes['chance']:.0%}), "
                   f"mean rank {probes['mean_rank']:.2f}")
        out.append("    (a probe asks whether the model finds the true continuation of a text likelier than look-alike "
                   "distractors; well above chance needs a model that has learnt the texts' wording: more training or a larger preset)")
    gen = results.get("generation", {})
    prompts = {p["id"]: p["prompt"] for p in gen.get("prompts", [])}
    # one sample each of the first prompts, at the lowest temperature above greedy
    sampled = [s for s in gen.get("samples", []) if s["temperature"] > 0]
    low = min((s["temperature"] for s in sampled), default=None)
    shown = [s for s in sampled if s["temperature"] == low and s["sample"] == 0][:samples]
    if shown:
        out.append("  samples (held-out prompt | model):")
    for s in shown:
        prompt = " ".join(prompts.get(s["prompt_id"], "").split())[-80:]
        text = " ".join(s["text"].split())
        out.append(f"    [t={s['temperature']:g}] ...{prompt} | {text}")
    return "\n".join(out)
