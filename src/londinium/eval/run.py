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
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from londinium.config import Config, EvalConfig, validate
from londinium.errors import ConfigError, LondiniumError
from londinium.files import require_file, write_json, write_text
from londinium.workspace import Workspace


def data_file(name: str) -> Path:
    """A file shipped in `londinium/data_files/`."""
    return Path(str(resources.files("londinium") / "data_files" / name))


def validate_config(e: EvalConfig) -> None:
    """The [eval] rules (declared in config.py, next to each field)."""
    validate(e)


def _word_list_paths(e: EvalConfig) -> tuple[Path, Path]:
    return (Path(e.period_words) if e.period_words else data_file("period_words.txt"),
            Path(e.anachronisms) if e.anachronisms else data_file("anachronisms.txt"))


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
) -> dict[str, Any]:
    """Evaluate a trained run and write its report card; returns the results (as in results.json)."""
    from londinium.data.documents import require_split
    from londinium.eval.probes import default_probe_file
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
    probe_file = Path(e.probe_file) if e.probe_file else default_probe_file()
    period_path, anachronism_path = _word_list_paths(e)
    splits = sorted({*e.splits, e.prompt_split, "train"})
    inputs = [ckpt.path / MODEL_FILE, ckpt.path / CONFIG_FILE, ws.tokenizer_file,
              *(require_split(ws, s) for s in splits), period_path, anachronism_path, *text_paths]
    if e.probes:
        inputs.append(probe_file)
    results: dict[str, Any] = {}

    def work() -> list[Path]:
        results.update(_evaluate(ws, e, run, model, run_cfg, ckpt, tok, tok_sha, probe_file, text_paths, log, show_progress))
        return write_outputs(ws, run, results)

    fingerprint = {"run": run, "checkpoint": ckpt.path.name, "texts": [str(t.resolve()) for t in text_paths],
                   "probe_file": str(probe_file) if e.probes else None}
    ran = ws.run_stage(f"eval/{run}", e, work, inputs=inputs, fingerprint=fingerprint, force=force, log=log)
    if not ran:
        results = json.loads(ws.eval_results(run).read_text(encoding="utf-8"))
    log(f"eval: report card {ws.eval_report_md(run)}")
    return results


def _evaluate(ws: Workspace, e: EvalConfig, run: str, model: Any, run_cfg: Config, ckpt: Any, tok: Any, tok_sha: str,
              probe_file: Path, text_paths: list[Path], log: Callable[[str], None], show_progress: bool) -> dict[str, Any]:
    from londinium.data.documents import iter_documents, iter_texts, require_split
    from londinium.eval.contamination import check_groups
    from londinium.eval.contamination import summarize as summarize_contamination
    from londinium.eval.generation import generate_samples, generation_metrics
    from londinium.eval.heldout import held_out_prompts, round_robin_by_source
    from londinium.eval.perplexity import evaluate_documents
    from londinium.eval.probes import load_probes, score_probes
    from londinium.eval.probes import summarize as summarize_probes
    from londinium.eval.text_metrics import load_word_list
    from londinium.infer.engine import Engine
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
    period_path, anachronism_path = _word_list_paths(e)
    period_words, anachronisms = load_word_list(period_path), load_word_list(anachronism_path)

    results: dict[str, Any] = {
        "run": run,
        "checkpoint": {"name": ckpt.path.name, "step": ckpt.step, "val_loss": ckpt.val_loss},
        "model": {"params": model.num_params(), "context": context, "vocab_size": run_cfg.model.vocab_size},
        "tokenizer_sha256": tok_sha,
        "config": _section_dict(e),
    }

    t = time.time()
    ppl: dict[str, Any] = {}
    for split in e.splits:
        docs = list(iter_documents(require_split(ws, split)))
        chosen = round_robin_by_source(docs, e.max_docs)
        log(f"eval: perplexity on {len(chosen)} of {len(docs)} {split} documents")
        block = evaluate_documents(model, enc_batch, chosen, bos, context, stride, e.batch_size, f"perplexity {split}", show_progress)
        ppl[split] = {"docs_total": len(docs), "docs_evaluated": len(chosen), **block}
    if text_paths:
        ppl["texts"] = {}
        for path in text_paths:
            doc = {"text": _read_text_file(path), "source": path.name}
            ppl["texts"][str(path)] = evaluate_documents(model, enc_batch, [doc], bos, context, stride, e.batch_size,
                                                         f"perplexity {path.name}", show_progress)["total"]
    results["perplexity"] = ppl
    seconds["perplexity"] = time.time() - t

    prompts = []
    if e.prompts:
        prompts = held_out_prompts(list(iter_documents(require_split(ws, e.prompt_split))), e.prompts, e.prompt_chars, e.reference_words)
        if not prompts:
            log(f"eval: no {e.prompt_split} document is longer than eval.prompt_chars + eval.reference_words words; no generation")

    t = time.time()
    probe_set = load_probes(probe_file) if e.probes else None
    groups = {"probe": {p.id: p.prompt + p.answer for p in probe_set.probes} if probe_set else {},
              "reference": {p.id: p.reference for p in prompts}}
    log(f"eval: contamination of {len(groups['probe'])} probes and {len(groups['reference'])} references against the train split")
    contamination = check_groups(groups, iter_texts(require_split(ws, "train")), e.contamination_ngram, e.contamination_threshold)
    results["contamination"] = {
        "ngram": e.contamination_ngram, "threshold": e.contamination_threshold,
        "summary": summarize_contamination(contamination), "items": [c.to_dict() for c in contamination],
    }
    seconds["contamination"] = time.time() - t

    if probe_set is not None:
        t = time.time()
        log(f"eval: scoring {len(probe_set.probes)} probes from {probe_file}")
        scored = score_probes(model, enc, probe_set.probes, bos, context, e.batch_size)
        flagged = {c.id for c in contamination if c.kind == "probe" and c.flagged}
        share = {c.id: c.share for c in contamination if c.kind == "probe"}
        results["probes"] = {
            "name": probe_set.name, "file": str(probe_file),
            "summary": summarize_probes(scored, flagged),
            "items": [{**r.to_dict(), "contamination": share.get(r.id, 0.0), "flagged": r.id in flagged} for r in scored],
        }
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
        seconds["generation"] = time.time() - t
    results["seconds_by_part"] = seconds
    results["seconds"] = time.time() - t_start
    return results


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
