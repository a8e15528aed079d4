"""The model card (`README.md` with the Hub's YAML front matter) and the machine-readable record
(`londinium.json`) of an export: what the model is, what it was trained on, how well it does, and
the hashes that trace it back to its checkpoint, tokenizer and corpus.

Everything comes from the workspace's own artifacts: the checkpoint's config and meta, the run's
metrics, the corpus data card (`corpus/report.json`) and, when the run was evaluated at this
checkpoint, its report card (`eval/<run>/results.json`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from londinium.files import sha256_file
from londinium.profiles import profile_for
from londinium.workspace import SPLITS, Workspace

# Licence identifiers the Hub knows; a source licence written as one of these is used as is.
HUB_LICENSES = {"apache-2.0", "mit", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
                "odc-by", "pddl", "odbl", "gpl-3.0", "lgpl-3.0", "bsd-3-clause", "unlicense", "openrail"}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def corpus_sources(ws: Workspace) -> list[dict[str, Any]]:
    """The sources of the data card that made it into the corpus."""
    report = _read_json(ws.corpus_report_json) or {}
    return [s for s in report.get("sources", []) if s.get("status") == "ok"]


def hub_license(sources: list[dict[str, Any]]) -> str:
    """One Hub licence id when every source states the same known one; 'unknown' with no data card or
    a source that states none; else 'other' (the card lists each source's own terms)."""
    licences = {str(s.get("license", "")).strip().lower() for s in sources}
    if not licences or "" in licences:
        return "unknown"
    if len(licences) == 1 and (only := next(iter(licences))) in HUB_LICENSES:
        return only
    return "other"


def training_summary(ws: Workspace, trained: Any) -> dict[str, Any]:
    """Steps, tokens seen and wall-clock training time up to the exported checkpoint."""
    from londinium.train.monitor import read_metrics

    step = trained.checkpoint.step
    rows = [r for r in read_metrics(ws.metrics_file(trained.run)) if r.get("type") == "train" and r.get("step", 0) <= step]
    return {"steps": step, "tokens_seen": trained.checkpoint.meta.get("tokens_seen"),
            "seconds": rows[-1].get("elapsed_s") if rows else None,
            "val_loss": (trained.checkpoint.eval or {}).get("val_loss"),
            "val_bits_per_byte": (trained.checkpoint.eval or {}).get("val_bpb")}


def evaluation(ws: Workspace, trained: Any) -> dict[str, Any] | None:
    """The run's report card, when it evaluated this very checkpoint."""
    results = _read_json(ws.eval_results(trained.run))
    if not results or (results.get("checkpoint") or {}).get("step") != trained.checkpoint.step:
        return None
    return results


def objective(ws: Workspace, trained: Any) -> dict[str, Any]:
    """What the run was trained for: next-token pre-training, SFT from a base run (which checkpoint, on
    which tasks and files) or distillation from a teacher; what a reader of an export asks first. Computed once per export:
    resolving a base or teacher checkpoint verifies its files."""
    cfg = trained.config
    out: dict[str, Any] = {"name": cfg.train.objective}
    if cfg.train.objective == "sft":
        out["base"] = _checkpoint_of(ws, cfg.sft.base, cfg.sft.checkpoint)
        out["tasks"], out["data"] = list(cfg.sft.tasks), [Path(p).name for p in cfg.sft.data]
        out["replay_share"] = cfg.sft.replay_share
    elif cfg.train.objective == "distill":
        out["teacher"] = _checkpoint_of(ws, cfg.distill.teacher, cfg.distill.teacher_checkpoint)
        out.update(alpha=cfg.distill.alpha, temperature=cfg.distill.temperature, kl=cfg.distill.kl)
    return out


def _checkpoint_of(ws: Workspace, run: str, checkpoint: str) -> dict[str, Any]:
    """A base or teacher checkpoint as the record names it: run, the checkpoint asked for and, while it
    is still in the workspace, the step it is now ('best' can move if that run trains on)."""
    from londinium.errors import LondiniumError
    from londinium.export.run import resolve_checkpoint

    out: dict[str, Any] = {"run": run, "checkpoint": checkpoint}
    try:
        out["step"] = resolve_checkpoint(ws, run, checkpoint).step
    except LondiniumError:
        out["step"] = None  # deleted since: the record still names it
    return out


def provenance(ws: Workspace, trained: Any, export: dict[str, Any], goal: dict[str, Any]) -> dict[str, Any]:
    """londinium.json: which run, step, objective (`objective()`), config, checkpoint, tokenizer and corpus
    the export came from."""
    from londinium import __version__

    ckpt = trained.checkpoint
    return {
        "londinium_version": __version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "export": export,
        "run": trained.run,
        "step": ckpt.step,
        "objective": goal,
        "parameters": trained.num_params,
        "checkpoint": {"path": str(ckpt.path), "saved_at": ckpt.meta.get("saved_at"),
                       "tokens_seen": ckpt.meta.get("tokens_seen"), "files": ckpt.meta.get("files", {})},
        "tokenizer_sha256": trained.tokenizer_sha256,
        "corpus": {split: {"sha256": sha256_file(ws.corpus_split(split))} if ws.corpus_split(split).is_file() else None
                   for split in SPLITS},
        "corpus_report_sha256": sha256_file(ws.corpus_report_json) if ws.corpus_report_json.is_file() else None,
        "config": dataclasses.asdict(trained.config),
    }


# ---- the card --------------------------------------------------------------------------------------


def _yaml(value: Any) -> str:
    # JSON scalars and lists are YAML: quoting every string keeps colons and dashes harmless.
    return json.dumps(value, ensure_ascii=False)


def _fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "unknown"


def _fmt_duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "unknown"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def render_card(ws: Workspace, trained: Any, architecture: str, dtype: str, goal: dict[str, Any], out_dir: str = ".") -> str:
    """README.md of a Hugging Face export: YAML front matter the Hub reads, then the card. `out_dir`
    is the name the loading example uses (the export's directory name; on the Hub, the repo id)."""
    m = trained.config.model
    sources = corpus_sources(ws)
    licence = hub_license(sources)
    train = training_summary(ws, trained)
    results = evaluation(ws, trained)
    periods = [p for s in sources for p in s.get("period", []) if p]  # [0, 0]: a source of no stated period
    written = f" written {min(periods)}-{max(periods)}" if periods else ""
    profile = profile_for(ws)
    prompt = profile.prompt_hint(ws)
    moe = m.n_experts > 0

    front = ["---", f"library_name: {_yaml('transformers')}", f"pipeline_tag: {_yaml('text-generation')}",
             f"license: {_yaml(licence)}"]
    if licence == "other":
        front.append(f"license_name: {_yaml('corpus-sources')}")
    # The corpus build keeps English text only (its quality filter counts English function words).
    front.append(f"language: {_yaml(['en'])}")
    tags = ["londinium", "from-scratch", architecture, "text-generation"] + (["mixture-of-experts"] if moe else [])
    front += [f"tags: {_yaml(tags)}", "---", ""]

    lines = [f"# {trained.run}, step {trained.checkpoint.step}", "",
             f"A {trained.num_params:,}-parameter language model trained from scratch with londinium on "
             f"{len(sources)} source(s){written}. It is a `transformers` `{architecture}`: no custom code.", ""]
    lines += ["## Architecture", "", "| | |", "|---|---|",
              f"| architecture | `{architecture}` ({dtype} weights) |",
              f"| parameters | {trained.num_params:,} |",
              f"| layers x width | {m.n_layer} x {m.n_embd} |",
              f"| attention heads | {m.n_head} (key/value heads: {m.n_kv_head or m.n_head}) |",
              f"| context | {m.context} tokens |",
              f"| vocabulary | {m.vocab_size} (byte-level BPE) |",
              f"| positions, norm, MLP | {m.positions}, {m.norm}, {m.mlp} |"]
    if moe:
        lines.append(f"| experts | {m.n_experts}, {m.top_k} per token |")
    lines += [f"| tied embeddings | {'yes' if m.tie_embeddings else 'no'} |", ""]
    lines += ["## Training", "", "| | |", "|---|---|", f"| objective | {_describe_objective(goal)} |",
              f"| steps | {train['steps']:,} |",
              f"| tokens seen | {_fmt_int(train['tokens_seen'])} |",
              f"| training time | {_fmt_duration(train['seconds'])} |"]
    if isinstance(train["val_loss"], float):
        bpb = f", {train['val_bits_per_byte']:.3f} bits per byte" if isinstance(train["val_bits_per_byte"], float) else ""
        lines.append(f"| validation loss at this step | {train['val_loss']:.3f}{bpb} |")
    lines.append("")
    lines += ["## Data", ""]
    if sources:
        lines += ["| source | title | author | period | training characters | licence |", "|---|---|---|---|---:|---|"]
        for s in sources:
            p = s.get("period") or [0, 0]
            lines.append(f"| {s['id']} | {s.get('title', '')} | {s.get('author', '')} | {f'{p[0]}-{p[-1]}' if p[0] else 'not stated'} | "
                         f"{_fmt_int(s.get('chars', {}).get('train'))} | {s.get('license', '') or 'not stated'} |")
        lines += ["", "The licence of each source is its own; the weights are derived from them. "
                      "The full data card is the workspace's `corpus/report.md`.", ""]
    else:
        lines += ["No data card was found in the workspace.", ""]
    lines += ["## Evaluation", ""]
    lines += _evaluation_lines(results) if results else [
        f"No evaluation of this checkpoint in the workspace (`londinium eval --run {trained.run}` writes one).", ""]
    # The period boilerplate only for a corpus whose profile names its language (period-london).
    use = (f"Generating and scoring text in {profile.style}, the language of its corpus. It is a small base model: it "
           "continues text, it does not follow instructions or know facts, and it reproduces the spelling, beliefs and "
           "prejudices of its sources and their time." if profile.style else
           "Generating and scoring text like that of its corpus. It is a small base model: it continues text, it does "
           "not follow instructions or know facts, and it reproduces the wording, errors and biases of its sources.")
    if goal["name"] == "sft":
        use = (f"A small assistant: a base model of its corpus fine-tuned to answer, through its chat template, the kind of "
               f"question it was fine-tuned on ({', '.join(goal['tasks'] + goal['data']) or 'its conversations'}). It "
               "answers in the trained format; it does not follow other instructions reliably or know facts beyond its "
               "corpus, and it reproduces the wording, errors and biases of its sources.")
        chat = "It was fine-tuned on conversations in its chat template (the answers only carried the loss)."
        example = ["```python", load_snippet(out_dir),
                   f"messages = [{{\"role\": \"user\", \"content\": {json.dumps(prompt, ensure_ascii=False)}}}]",
                   "ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
                   "out = model.generate(**ids, max_new_tokens=40)",
                   "print(tok.decode(out[0, ids[\"input_ids\"].shape[1]:], skip_special_tokens=True))", "```", ""]
    else:
        chat = "The chat template's role tokens are reserved in the vocabulary but the model was not trained on conversations."
        example = ["```python", load_snippet(out_dir),
                   f"ids = tok({json.dumps(prompt, ensure_ascii=False)}, return_tensors=\"pt\").input_ids",
                   "print(tok.decode(model.generate(ids, max_new_tokens=40)[0]))", "```", ""]
    lines += ["## Intended use and limits", "",
              f"{use} Passages it has seen in training may come back verbatim. {chat} "
              "Inputs longer than the context are not supported.", ""]
    lines += ["## How to load", "", f"From the directory `{out_dir}` (or the Hub repository it was uploaded to):", "",
              *example,
              "The tokenizer maps control-token text such as `<|endoftext|>` in a prompt to the control token, "
              "as `transformers` does by default; londinium's own encoder keeps such text as text. Pass "
              "`split_special_tokens=True` to the tokenizer to get londinium's ids.", "",
              f"vLLM: `vllm serve {out_dir}`. `londinium.json` records the run, checkpoint, tokenizer and corpus hashes.", ""]
    return "\n".join(front + lines)


def _evaluation_lines(results: dict[str, Any]) -> list[str]:
    lines = ["Bits per byte on held-out text (lower is better), by source:", "",
             "| split | source | documents | bits per byte |", "|---|---|---:|---:|"]
    for split, res in results.get("perplexity", {}).items():
        for source, r in sorted(res.get("by_source", {}).items()):
            lines.append(f"| {split} | {source} | {r.get('docs')} | {r['bits_per_byte']:.3f} |")
        if "total" in res:
            lines.append(f"| {split} | **all** | {res['total'].get('docs')} | **{res['total']['bits_per_byte']:.3f}** |")
    cloze = results.get("cloze", {}).get("summary", {}).get("overall", {})
    if cloze.get("n"):
        lines += ["", f"Cloze set (which of {results['cloze'].get('choices', '?')} words of the corpus comes next in a held-out "
                      f"passage): {cloze['accuracy']:.1%} ± {cloze['accuracy_se']:.1%} correct of {cloze['n']} "
                      f"(chance {cloze['chance']:.0%}; ± one standard error, clustered by document)."]
    probes = results.get("probes", {})
    overall = probes.get("summary", {}).get("overall", {})
    if overall.get("n"):
        lines += ["", f"{probes.get('title') or 'Log-likelihood probes'} ({probes.get('name', '')}): {overall['accuracy']:.0%} "
                      f"correct of {overall['n']} (chance {overall['chance']:.0%})."]
    tasks = results.get("tasks", {})
    if tasks.get("tasks"):
        how = f"{tasks['shots']}-shot" if tasks.get("shots") else "zero-shot"
        lines += ["", f"Tasks cut from the corpus's held-out documents, asked through the chat template ({how}, greedy); "
                      "score and baseline as the task's metric says (accuracy, exact match or chrF 0-100), *format* the "
                      "share of answers that ended the turn in time (± one standard error):", "",
                  "| task | split | items | score | baseline | format |", "|---|---|---:|---:|---:|---:|"]
        for name, block in tasks["tasks"].items():
            for split, b in block["splits"].items():
                t = b["summary"]
                if t.get("n"):
                    lines.append(f"| {name} | {split} | {t['n']} | {100 * t['score']:.1f} ± {100 * t['score_se']:.1f} | "
                                 f"{100 * t['baseline']:.1f} ({block['baseline']}) | {t['format']:.0%} |")
    return lines + [""]


def _describe_objective(goal: dict[str, Any]) -> str:
    if goal["name"] == "sft":
        b = goal["base"]
        step = f" step {b['step']}" if b.get("step") is not None else f" ({b['checkpoint']})"
        what = ", ".join(goal["tasks"] + goal["data"]) or "conversations"
        return f"supervised fine-tuning of `{b['run']}`{step} on {what} ({goal['replay_share']:.0%} replay of pre-training text)"
    if goal["name"] == "distill":
        t = goal["teacher"]
        return f"next-token prediction distilled from `{t['run']}` (alpha {goal['alpha']:g}, T {goal['temperature']:g}, {goal['kl']} KL)"
    return "next-token prediction (pre-training)"


def load_snippet(path: str | Path) -> str:
    """The two lines that load an export in `transformers`."""
    return (f"from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            f"tok, model = AutoTokenizer.from_pretrained({str(path)!r}), AutoModelForCausalLM.from_pretrained({str(path)!r})")
