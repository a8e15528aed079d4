"""`londinium eval`: the report card of one trained run, and the comparison of two.

    evaluate(ws, cfg, run="main")        -> eval/main/{results.json, report.md, *.png}
    compare_runs(ws, "main", "wide")     -> eval/compare-main-vs-wide.{md,json}

The evaluation is a stage like the others (recorded as "eval/<run>"): it re-runs only when the
checkpoint, the tokenizer, the corpus splits, the probe set, the word lists, the text files or the
`[eval]` config change.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from londinium.config import Config, EvalConfig, validate
from londinium.errors import ConfigError, LondiniumError
from londinium.files import require_file, sha256_bytes, sha256_file, write_json, write_text
from londinium.profiles import Profile, profile_for
from londinium.tasks.cloze import ClozeSpec
from londinium.workspace import Workspace


def validate_config(e: EvalConfig) -> None:
    """The [eval] rules (declared in config.py, next to each field)."""
    validate(e)


@dataclass(frozen=True)
class Instruments:
    """What a run is measured with besides the corpus splits: each None when not used."""

    profile: Profile
    period_words: Path | None  # eval.period_words, else the profile's list
    anachronisms: Path | None
    probe_file: Path | None  # eval.probe_file, else the profile's set; None when eval.probes is off
    probe_title: str
    cloze_file: Path | None

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.period_words, self.anachronisms, self.probe_file, self.cloze_file) if p is not None]


def instruments(ws: Workspace, e: EvalConfig, log: Callable[[str], None] = print) -> Instruments:
    """The word lists, probe set and cloze set of an evaluation of `ws` (the cloze set is cut, as the
    recorded stage "tasks/cloze", when it is missing or out of date)."""
    from londinium.tasks.build import build_cloze

    profile = profile_for(ws)
    probe_file = (Path(e.probe_file) if e.probe_file else profile.path("probes")) if e.probes else None
    title = (profile.probes_title if not e.probe_file else "") or "Probes"
    cloze = build_cloze(ws, cloze_spec(e), log=log) if e.cloze else None
    return Instruments(profile, Path(e.period_words) if e.period_words else profile.path("period_words"),
                       Path(e.anachronisms) if e.anachronisms else profile.path("anachronisms"), probe_file, title, cloze)


def cloze_spec(e: EvalConfig) -> ClozeSpec:
    return ClozeSpec(split=e.cloze_split, items=e.cloze_items, choices=e.cloze_choices, context_words=e.cloze_context_words, seed=e.cloze_seed)


def _read_text_file(path: Path) -> str:
    try:
        return require_file(path, "--text").read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LondiniumError(f"--text {path}: not UTF-8 text (byte {e.start}); convert it to UTF-8") from None


def evaluate(
    ws: Workspace,
    cfg: Config,
    run: str | None = None,
    texts: Sequence[str | Path] = (),
    force: bool = False,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
    tasks: bool = False,
    shots: int | None = None,
) -> dict[str, Any]:
    """Evaluate a trained run and write its report card; returns the results (as in results.json).
    With `tasks`, the task set (built or confirmed up to date first) is answered by generation too,
    `shots`-shot (None: tasks.shots for a base model, 0 for a fine-tuned one; eval/tasks.py)."""
    from londinium.data.documents import require_split
    from londinium.checkpoint import CONFIG_FILE, MODEL_FILE
    from londinium.model.load import load_run

    run = run or cfg.train.run_name
    e = cfg.eval
    validate_config(e)
    text_paths = [Path(t) for t in texts]
    for t in text_paths:  # read whole now: one that is no UTF-8 text fails before the stage drops its old record
        _read_text_file(t)
    if cfg.train.threads > 0:  # the same CPU thread setting as training (0: torch's default)
        import torch

        torch.set_num_threads(cfg.train.threads)
    trained = load_run(ws, run=run, checkpoint=e.checkpoint, device=cfg.train.device, device_setting="train.device")
    model, run_cfg, ckpt, tok, tok_sha = trained.model, trained.config, trained.checkpoint, trained.tokenizer, trained.tokenizer_sha256
    used = instruments(ws, e, log=log)
    task_set: dict[str, Any] = {}
    if tasks:
        from londinium.eval.tasks import shots_for
        from londinium.tasks.build import build_tasks

        names = build_tasks(ws, cfg.tasks, log=log)
        task_set = {"names": names, "shots": shots_for(run_cfg, shots, cfg.tasks.shots), "max_tokens": cfg.tasks.max_tokens}
        if cfg.tasks.frequency_penalty:  # recorded only when set: plain-greedy results keep their fingerprint
            task_set["frequency_penalty"] = cfg.tasks.frequency_penalty
    splits = sorted({*e.splits, e.prompt_split, "train"})
    inputs = [ckpt.path / MODEL_FILE, ckpt.path / CONFIG_FILE, ws.tokenizer_file,
              *(require_split(ws, s) for s in splits), *used.files, *text_paths,
              *(ws.task_items(n) for n in task_set.get("names", ()))]
    results: dict[str, Any] = {}

    def work() -> list[Path]:
        results.update(_evaluate(ws, e, run, model, run_cfg, ckpt, tok, tok_sha, used, text_paths, log, show_progress))
        if task_set:
            from londinium.eval.tasks import instrument

            results.update(_tasks(ws, model, tok, task_set, log))
            results["instruments"]["tasks"] = instrument(results["tasks"])
        return write_outputs(ws, run, results)

    fingerprint = {"run": run, "checkpoint": ckpt.path.name, "texts": [str(t.resolve()) for t in text_paths],
                   "instruments": [str(p) for p in used.files], "profile": used.profile.to_record(), **({"tasks": task_set} if task_set else {})}
    ran = ws.run_stage(f"eval/{run}", e, work, inputs=inputs, fingerprint=fingerprint, force=force, log=log)
    if not ran:
        results = json.loads(ws.eval_results(run).read_text(encoding="utf-8"))
    log(f"eval: report card {ws.eval_report_md(run)}")
    return results


def _evaluate(ws: Workspace, e: EvalConfig, run: str, model: Any, run_cfg: Config, ckpt: Any, tok: Any, tok_sha: str,
              used: Instruments, text_paths: list[Path], log: Callable[[str], None], show_progress: bool) -> dict[str, Any]:
    from londinium.data.documents import iter_documents, iter_texts, require_split
    from londinium.eval.cloze import score_cloze
    from londinium.eval.contamination import check_groups
    from londinium.eval.contamination import summarize as summarize_contamination
    from londinium.eval.generation import generate_samples, generation_metrics
    from londinium.eval.heldout import held_out_prompts, round_robin_by_source
    from londinium.eval.perplexity import evaluate_documents
    from londinium.eval.probes import load_probes, score_probes
    from londinium.eval.probes import summarize as summarize_probes
    from londinium.eval.text_metrics import load_word_list
    from londinium.infer.engine import Engine
    from londinium.tasks.items import read_items
    from londinium.tokenizer.codec import encode, encode_batch, eot_id

    t_start = time.time()
    seconds: dict[str, float] = {}
    context = run_cfg.model.context
    stride = e.stride or max(1, context // 2)
    if stride > context:
        raise ConfigError(f"eval.stride = {e.stride} is larger than the model's context ({context}); use at most {context}")
    bos = eot_id(tok)
    enc = lambda text: encode(tok, text)  # noqa: E731
    enc_batch = lambda texts: encode_batch(tok, texts)  # noqa: E731
    # a profile without a list, or a list with no words: the column is left out, not 0
    period_words = load_word_list(used.period_words) if used.period_words else []
    anachronisms = load_word_list(used.anachronisms) if used.anachronisms else []

    results: dict[str, Any] = {
        "run": run,
        "checkpoint": {"name": ckpt.path.name, "step": ckpt.step, "val_loss": ckpt.val_loss},
        "model": {"params": model.num_params(), "context": context, "vocab_size": run_cfg.model.vocab_size},
        "tokenizer_sha256": tok_sha,
        "profile": used.profile.name,
        "config": _section_dict(e),
    }
    instruments: dict[str, Any] = {}

    t = time.time()
    ppl: dict[str, Any] = {}
    for split in e.splits:
        docs = list(iter_documents(require_split(ws, split)))
        chosen = round_robin_by_source(docs, e.max_docs)
        log(f"eval: perplexity on {len(chosen)} of {len(docs)} {split} documents")
        block = evaluate_documents(model, enc_batch, chosen, bos, context, stride, e.batch_size, f"perplexity {split}", show_progress)
        ppl[split] = {"docs_total": len(docs), "docs_evaluated": len(chosen), **block}
        instruments[f"perplexity {split}"] = {"corpus": sha256_file(require_split(ws, split)), "documents": len(chosen)}
    if text_paths:
        ppl["texts"] = {}
        for path in text_paths:
            doc = {"text": _read_text_file(path), "source": path.name}
            ppl["texts"][str(path)] = evaluate_documents(model, enc_batch, [doc], bos, context, stride, e.batch_size,
                                                         f"perplexity {path.name}", show_progress)["total"]
            instruments[f"perplexity {path.name}"] = {"text": sha256_file(path)}
    results["perplexity"] = ppl
    seconds["perplexity"] = time.time() - t

    cloze_items = list(read_items(used.cloze_file)) if used.cloze_file is not None else []
    if used.cloze_file is not None:
        t = time.time()
        log(f"eval: scoring {len(cloze_items)} cloze items from {used.cloze_file}")
        results["cloze"] = _cloze(ws, used.cloze_file, score_cloze(model, enc, cloze_items, bos, context, e.batch_size))
        instruments["cloze"] = {"items": results["cloze"]["sha256"]}
        seconds["cloze"] = time.time() - t

    prompts = []
    if e.prompts:
        prompts = held_out_prompts(list(iter_documents(require_split(ws, e.prompt_split))), e.prompts, e.prompt_chars, e.reference_words)
        if not prompts:
            log(f"eval: no {e.prompt_split} document is longer than eval.prompt_chars + eval.reference_words words; no generation")

    t = time.time()
    probe_set = load_probes(used.probe_file) if used.probe_file else None
    groups = {"probe": {p.id: p.prompt + p.answer for p in probe_set.probes} if probe_set else {},
              "cloze": {i.id: i.prompt + i.answer for i in cloze_items},
              "reference": {p.id: p.reference for p in prompts}}
    log(f"eval: contamination of {', '.join(f'{len(v)} {k} items' for k, v in groups.items())} against the train split")
    contamination = check_groups(groups, iter_texts(require_split(ws, "train")), e.contamination_ngram, e.contamination_threshold)
    results["contamination"] = {
        "ngram": e.contamination_ngram, "threshold": e.contamination_threshold,
        "summary": summarize_contamination(contamination), "items": [c.to_dict() for c in contamination],
    }
    seconds["contamination"] = time.time() - t

    if probe_set is not None:
        t = time.time()
        log(f"eval: scoring {len(probe_set.probes)} probes from {used.probe_file}")
        scored = score_probes(model, enc, probe_set.probes, bos, context, e.batch_size)
        flagged = {c.id for c in contamination if c.kind == "probe" and c.flagged}
        share = {c.id: c.share for c in contamination if c.kind == "probe"}
        results["probes"] = {
            "name": probe_set.name, "title": used.probe_title, "file": str(used.probe_file),
            "summary": summarize_probes(scored, flagged),
            "items": [{**r.to_dict(), "contamination": share.get(r.id, 0.0), "flagged": r.id in flagged} for r in scored],
        }
        instruments["probes"] = {"set": sha256_file(used.probe_file)}
        seconds["probes"] = time.time() - t

    if prompts:
        t = time.time()
        log(f"eval: sampling {len(prompts)} held-out prompts at temperatures {', '.join(f'{x:g}' for x in e.temperatures)}")
        engine = Engine(model, tok)
        samples = generate_samples(engine, enc, prompts, e.temperatures, e.samples_per_prompt, e.max_new_tokens, bos, e.seed)
        results["generation"] = {
            "split": e.prompt_split, "max_new_tokens": e.max_new_tokens,
            "prompts": [p.to_dict() for p in prompts],
            "metrics": generation_metrics(samples, prompts, period_words, anachronisms, e.reference_words),
            "samples": samples,
        }
        instruments["generation"] = {"corpus": sha256_file(require_split(ws, e.prompt_split)), "prompts": [p.id for p in prompts],
                                     "settings": [e.prompt_chars, e.reference_words, e.temperatures, e.samples_per_prompt,
                                                  e.max_new_tokens, e.seed],
                                     "word lists": sha256_bytes("\n".join([*period_words, "#", *anachronisms]).encode("utf-8"))}
        seconds["generation"] = time.time() - t
    results["instruments"] = instruments
    results["seconds_by_part"] = seconds
    results["seconds"] = time.time() - t_start
    return results


def _tasks(ws: Workspace, model: Any, tok: Any, task_set: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """The "tasks" block and its instrument (eval/tasks.py), added to the results."""
    from londinium.eval.tasks import score_tasks
    from londinium.infer.engine import Engine

    t = time.time()
    block = score_tasks(ws, task_set["names"], Engine(model, tok), task_set["shots"], task_set["max_tokens"], log,
                        task_set.get("frequency_penalty", 0.0))
    block["seconds"] = time.time() - t
    return {"tasks": block}


def _cloze(ws: Workspace, path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The results' "cloze" block: what the set is (from its card) and the scores of `rows`."""
    from londinium.eval.cloze import summarize

    card = json.loads(ws.task_card("cloze").read_text(encoding="utf-8"))
    return {"file": str(path), "sha256": sha256_file(path), "split": card["spec"]["split"], "choices": card["spec"]["choices"],
            "context_words": card["spec"]["context_words"], "unigram_accuracy": card["unigram_accuracy"],
            "summary": summarize(rows, 1 / card["spec"]["choices"]), "examples": card["examples"], "note": card["note"], "items": rows}


def _section_dict(e: EvalConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(e)


def write_outputs(ws: Workspace, run: str, results: dict[str, Any]) -> list[Path]:
    """results.json, the plots and report.md (each written atomically); returns their paths."""
    from londinium.eval.report import LOSS_PLOT, PPL_PLOT, plot_perplexity_by_source, render_markdown
    from londinium.train.monitor import plot_losses

    outputs: list[Path] = []
    plots: dict[str, str] = {}
    ppl_plot = ws.eval_run_dir(run) / PPL_PLOT
    if plot_perplexity_by_source(results, ppl_plot):
        plots["Bits per byte by source"] = PPL_PLOT
        outputs.append(ppl_plot)
    if ws.metrics_file(run).is_file():
        loss_plot = ws.eval_run_dir(run) / LOSS_PLOT
        plot_losses(ws.metrics_file(run), loss_plot, title=f"run {run}: training loss")
        plots["Training and validation loss"] = LOSS_PLOT
        outputs.append(loss_plot)
    write_json(ws.eval_results(run), results)
    write_text(ws.eval_report_md(run), render_markdown(results, plots))
    return [ws.eval_results(run), ws.eval_report_md(run), *outputs]
