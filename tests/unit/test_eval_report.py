"""The report card: generation metrics on hand-made samples, the Markdown on a results fixture, and
`londinium eval` end to end on a real workspace (fixture corpus, real BPE, a random GPT saved as a
real checkpoint) -- outputs written, the stage skipped when nothing changed, two runs compared."""

from __future__ import annotations

import json

import pytest
from eval_fixtures import one_thread_no_grad  # noqa: F401  (autouse)
from eval_fixtures import tiny_gpt, tokenizer
from tok_fixtures import write_corpus

from londinium.cli import main
from londinium.config import Config, load_config, to_toml
from londinium.errors import ConfigError, LondiniumError
from londinium.eval.compare import compare_runs, flatten, render_comparison
from londinium.eval.generation import generation_metrics
from londinium.eval.heldout import HeldOut, cut_prompt, held_out_prompts, round_robin_by_source
from londinium.eval.report import render_markdown
from londinium.eval.run import evaluate
from londinium.tokenizer.codec import tokenizer_sha256
from londinium.tokenizer.train import save_tokenizer
from londinium.checkpoint import save_checkpoint
from londinium.workspace import Workspace

# ---- held-out prompts -------------------------------------------------------------------------------


def test_round_robin_takes_every_source_before_a_second_document_of_any():
    docs = [{"id": i, "source": s} for i, s in enumerate("aaaabbc")]
    assert [d["source"] for d in round_robin_by_source(docs)] == list("abcabaa")
    assert [d["id"] for d in round_robin_by_source(docs, limit=4)] == [0, 4, 6, 1]


def test_selection_spreads_over_works_within_a_source_and_prompts_skip_title_chunks():
    from londinium.eval.heldout import prompt_documents

    docs = [{"id": f"{w}#{i}", "source": "shakespeare", "group": w} for w in ("hamlet", "lear") for i in range(3)]
    docs.append({"id": "kjv#0", "source": "kjv", "group": "genesis-1"})
    assert [d["id"] for d in round_robin_by_source(docs)] == ["hamlet#0", "kjv#0", "lear#0", "hamlet#1", "lear#1", "hamlet#2", "lear#2"]
    # the first chunk of a work with several (title page, dramatis personae) is not a prompt
    assert [d["id"] for d in prompt_documents(docs)] == ["hamlet#1", "kjv#0", "lear#1", "hamlet#2", "lear#2"]


def test_prompt_is_cut_at_a_word_boundary_and_reference_is_the_next_words():
    text = "And God said, Let there be light: and there was light. And God saw the light, that it was good"
    prompt, ref = cut_prompt(text, 20, 4)
    assert prompt == "And God said, Let"
    assert ref == "there be light: and"
    assert text.startswith(prompt) and ref.split()[0] == text[len(prompt):].split()[0]
    assert cut_prompt("too short", 20, 4) is None
    assert cut_prompt(text, 80, 50) is None  # not enough words left for the reference


def test_held_out_prompts_skip_short_documents_and_spread_over_sources():
    long = "word " * 80
    docs = [{"id": "a1", "source": "a", "text": "short"}, {"id": "a2", "source": "a", "text": long},
            {"id": "b1", "source": "b", "text": long}]
    got = held_out_prompts(docs, n=5, prompt_chars=50, reference_words=5)
    assert [p.id for p in got] == ["b1", "a2"] or [p.id for p in got] == ["a2", "b1"]
    assert all(len(p.reference.split()) == 5 for p in got)


# ---- generation metrics -----------------------------------------------------------------------------


def test_generation_metrics_count_anachronisms_and_score_against_the_reference():
    prompts = [HeldOut("p1", "kjv", "In the beginning", "God created the heaven and the earth"),
               HeldOut("p2", "shakespeare", "Now is the", "winter of our discontent made glorious summer")]
    samples = [
        {"temperature": 0.0, "prompt_id": "p1", "sample": 0, "text": " God created the heaven and the earth and more words after"},
        {"temperature": 0.0, "prompt_id": "p2", "sample": 0, "text": " winter of our discontent made glorious summer"},
        {"temperature": 1.0, "prompt_id": "p1", "sample": 0, "text": " the railway station, okay, thou knave"},
        {"temperature": 1.0, "prompt_id": "p1", "sample": 1, "text": " a telegraph hath come unto thee"},
        {"temperature": 1.0, "prompt_id": "p2", "sample": 0, "text": " rain rain rain rain rain rain"},
    ]
    m = generation_metrics(samples, prompts, ["thou", "hath", "unto", "thee"], ["railway", "okay", "telegraph"], reference_words=7)
    assert set(m) == {"reference", "0", "1"}
    assert m["0"]["bleu"] == pytest.approx(100.0)  # the samples, cut to 7 words, are the references
    assert m["0"]["rougeL"] == pytest.approx(1.0)
    assert m["0"]["anachronisms"] == 0
    assert m["1"]["anachronisms"] == 3 and m["1"]["anachronism_words"] == {"railway": 1, "okay": 1, "telegraph": 1}
    assert m["1"]["texts"] == 3
    assert m["1"]["bleu"] < 10
    assert m["1"]["period_share"] == pytest.approx(4 / 18)
    assert m["1"]["rep_4"] == pytest.approx((0 + 0 + (1 - 1 / 3)) / 3)
    assert m["reference"]["anachronisms"] == 0 and "bleu" not in m["reference"]


# ---- the Markdown --------------------------------------------------------------------------------------


def _tally(tokens=100, nbytes=400, nll=250.0, docs=2):
    import math

    return {"docs": docs, "tokens": tokens, "bytes": nbytes, "nll": nll, "loss": nll / tokens,
            "perplexity": math.exp(nll / tokens), "bits_per_byte": nll / math.log(2) / nbytes}


def _results(run="a", bpb_scale=1.0):
    probe_items = [
        {"id": "kjv-1", "category": "kjv-verse", "logprobs": [-1.0, -2.0], "nbytes": [6, 6], "rank": 1, "correct": True,
         "correct_norm": True, "choices": [" earth.", " stars."], "contamination": 1.0, "flagged": True},
        {"id": "who-1", "category": "speaker", "logprobs": [-3.0, -2.0], "nbytes": [7, 7], "rank": 2, "correct": False,
         "correct_norm": False, "choices": [" Hamlet", " Horatio"], "contamination": 0.2, "flagged": False},
    ]
    block = {"n": 2, "accuracy": 0.5, "accuracy_norm": 0.5, "mean_rank": 1.5, "chance": 0.5}
    gen = {"texts": 2, "mean_words": 9.0, "distinct_1": 0.8, "distinct_2": 0.9, "rep_4": 0.0, "period_share": 0.05,
           "anachronisms": 1, "anachronism_words": {"railway": 1}, "bleu": 3.2, "rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.18}
    return {
        "run": run, "checkpoint": {"name": "step-000010", "step": 10, "val_loss": 3.21},
        "model": {"params": 123456, "context": 32, "vocab_size": 400}, "tokenizer_sha256": "abc",
        "perplexity": {"val": {"docs_total": 10, "docs_evaluated": 2, "total": _tally(nll=250.0 * bpb_scale),
                               "by_source": {"kjv": _tally(nll=200.0 * bpb_scale), "milton": _tally(nll=300.0 * bpb_scale)},
                               "by_period": {"1611": _tally()}},
                       "texts": {"/tmp/x.txt": _tally(docs=1)}},
        "probes": {"name": "period-london", "title": "Domain probes (period London)", "file": "probes.toml", "items": probe_items,
                   "summary": {"overall": block, "by_category": {"kjv-verse": {**block, "n": 1, "accuracy": 1.0},
                                                                 "speaker": {**block, "n": 1, "accuracy": 0.0}},
                               "clean": {**block, "n": 1}, "contaminated": {**block, "n": 1}}},
        "contamination": {"ngram": 8, "threshold": 0.5,
                          "summary": {"probe": {"items": 2, "flagged": 1, "mean_share": 0.6},
                                      "reference": {"items": 1, "flagged": 1, "mean_share": 0.9}},
                          "items": [{"id": "kjv/x#3", "kind": "reference", "ngrams": 10, "found": 9, "share": 0.9, "flagged": True}]},
        "generation": {"split": "val", "max_new_tokens": 16,
                       "prompts": [{"id": "kjv/x#3", "source": "kjv", "prompt": "In the beginning | God", "reference": "created the heaven"}],
                       "metrics": {"reference": {k: v for k, v in gen.items() if k not in ("bleu", "rouge1", "rouge2", "rougeL")}, "0.7": gen},
                       "samples": [{"temperature": 0.7, "prompt_id": "kjv/x#3", "sample": 0, "text": " the railway\nstation"}]},
        "seconds": 1.5,
    }


def test_report_markdown_has_every_section_table_and_sample():
    md = render_markdown(_results(), {"Bits per byte by source": "perplexity_by_source.png"})
    for heading in ("# Evaluation report: run `a`", "## Perplexity and bits per byte", "## Domain probes",
                    "## Contamination", "## Generation", "### Samples", "## Plots"):
        assert heading in md
    assert "2 of 10 documents" in md and "source `milton`" in md and "period 1611" in md and "`/tmp/x.txt`" in md
    assert "| **all** | 2 | 50.0% | 50.0% | 1.50 | 50.0% |" in md
    assert "not contaminated" in md and "contaminated (flagged)" in md
    assert "**Warning:** held-out references found in the training split" in md and "`kjv/x#3` (90.0%)" in md
    assert "1 (railway x1)" in md
    assert "| who-1 | `Hamlet` | `Horatio` | 2 |" in md  # the wrong probe and the model's choice
    assert "In the beginning \\| God" in md or "In the beginning | God" in md  # quoted prompt
    assert "*T = 0.7:* the railway / station" in md
    assert "![Bits per byte by source](perplexity_by_source.png)" in md
    # every table row has as many cells as its header
    for block in md.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:
            widths = {ln.replace("\\|", "").count("|") for ln in lines}
            assert len(widths) == 1, block


def test_samples_are_shown_on_one_line_and_empty_ones_say_so():
    from londinium.eval.report import one_line

    assert one_line("  Thou art\n\n\n  more lovely \n") == "Thou art / more lovely"
    assert "only whitespace" in one_line("\n\n ")
    assert "empty" in one_line("")


def test_comparison_shows_both_runs_the_difference_and_which_is_better():
    a, b = _results("a"), _results("b", bpb_scale=0.5)
    b["tokenizer_sha256"] = "other"
    md, data = render_comparison("a", a, "b", b)
    row = next(r for r in data["rows"] if r["metric"] == "val bits/byte")
    assert row["b"] == pytest.approx(row["a"] / 2) and row["better"] == "b"
    assert row["difference"] == pytest.approx(row["b"] - row["a"])
    assert next(r for r in data["rows"] if r["metric"] == "probes accuracy")["better"] is None
    assert "different tokenizers" in md
    # distinct-2 and period words: closer to the held-out text wins, not higher (reference 0.9 / 5%)
    b["generation"]["metrics"]["0.7"] = {**b["generation"]["metrics"]["0.7"], "distinct_2": 0.99, "period_share": 0.04}
    a["generation"]["metrics"]["reference"]["distinct_2"] = b["generation"]["metrics"]["reference"]["distinct_2"] = 0.9
    _, data = render_comparison("a", a, "b", b)
    rows = {r["metric"]: r for r in data["rows"]}
    assert rows["T=0.7 distinct-2"]["better"] == "a"  # a has 0.9, exactly the reference's
    assert rows["T=0.7 period words"]["better"] == "a"  # a 5% = reference, b 4%
    assert rows["T=0.7 anachronisms"]["better"] is None
    assert set(flatten(a)) == {r["metric"] for r in data["rows"]}


# ---- end to end ---------------------------------------------------------------------------------------


EVAL_SETS = ["eval.max_docs=3", "eval.prompts=2", "eval.prompt_chars=60", "eval.reference_words=6",
             "eval.temperatures=[0, 1.0]", "eval.samples_per_prompt=2", "eval.max_new_tokens=6", "eval.batch_size=4",
             "train.device=cpu"]


def _save_run(ws: Workspace, run: str, seed: int, val_loss: float = 3.0) -> None:
    model = tiny_gpt(context=32, seed=seed)
    cfg = Config()
    cfg.model = model.config
    ckpt = save_checkpoint(ws.checkpoints_dir(run), 5, model, {}, to_toml(cfg), {"tokenizer_sha256": tokenizer_sha256(ws)})
    (ckpt.path / "eval.json").write_text(json.dumps({"val_loss": val_loss}))
    rows = [{"type": "train", "step": s, "loss": 6.0 - s / 10, "lr": 1e-3} for s in range(1, 6)] + [{"type": "eval", "step": 5, "val_loss": val_loss}]
    ws.metrics_file(run).write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def eval_ws(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("eval") / "ws")
    write_corpus(ws, train_per_source=6)
    save_tokenizer(tokenizer(), ws)
    _save_run(ws, "a", seed=0)
    _save_run(ws, "b", seed=1)
    return ws


def _cfg(*extra: str) -> Config:
    return load_config(overrides=[*EVAL_SETS, *extra])


def test_eval_writes_results_report_and_plots_and_then_is_up_to_date(eval_ws, tmp_path):
    text = tmp_path / "sonnet.txt"
    text.write_text("Shall I compare thee to a summer's day? Thou art more lovely and more temperate.", encoding="utf-8")
    logs: list[str] = []
    r = evaluate(eval_ws, _cfg(), run="a", texts=[text], log=logs.append, show_progress=False)
    out = eval_ws.eval_run_dir("a")
    for name in ("results.json", "report.md", "perplexity_by_source.png", "loss.png", "config.toml"):
        assert (out / name).is_file(), name
    assert (out / "perplexity_by_source.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads(eval_ws.eval_results("a").read_text())
    assert on_disk["run"] == "a" and on_disk["checkpoint"]["name"] == "step-000005"
    assert set(r["perplexity"]) == {"val", "test", "texts"}
    val = r["perplexity"]["val"]
    assert val["docs_evaluated"] == 3 and val["docs_total"] > 3
    assert sum(t["tokens"] for t in val["by_source"].values()) == val["total"]["tokens"]
    assert r["perplexity"]["texts"][str(text)]["bytes"] == len(text.read_bytes())
    # a random model over a 400-token vocabulary: perplexity near the vocabulary size, not 1 or inf
    assert 50 < val["total"]["perplexity"] < 2000
    assert r["probes"]["summary"]["overall"]["n"] >= 40
    assert {c["kind"] for c in r["contamination"]["items"]} == {"probe", "cloze", "reference"}
    assert r["cloze"]["summary"]["overall"]["n"] == len(r["cloze"]["items"]) > 0
    gen = r["generation"]
    assert len(gen["prompts"]) == 2 and set(gen["metrics"]) == {"reference", "0", "1"}
    assert len(gen["samples"]) == 2 * 1 + 2 * 2  # one greedy sample, two at T = 1, per prompt
    hot = {s["prompt_id"]: s["text"] for s in gen["samples"] if s["temperature"] == 1.0 and s["sample"] == 0}
    assert len(set(hot.values())) == 2  # each prompt has its own random stream
    # the references are held out: they come from the val split, after the prompt
    val_texts = [json.loads(line)["text"] for line in eval_ws.corpus_split("val").read_text().splitlines()]
    for p in gen["prompts"]:
        doc = next(t for t in val_texts if t.startswith(p["prompt"]))
        assert " ".join(doc[len(p["prompt"]):].split()).startswith(p["reference"])
    md = eval_ws.eval_report_md("a").read_text()
    assert "## Domain probes" in md and "![Training and validation loss](loss.png)" in md

    logs.clear()
    again = evaluate(eval_ws, _cfg(), run="a", texts=[text], log=logs.append, show_progress=False)
    assert any("up to date" in m for m in logs)
    assert again == on_disk
    evaluate(eval_ws, _cfg("eval.max_docs=2"), run="a", texts=[text], log=logs.append, show_progress=False)
    assert json.loads(eval_ws.eval_results("a").read_text())["perplexity"]["val"]["docs_evaluated"] == 2


def test_eval_is_reproducible_for_the_same_checkpoint_and_seed(eval_ws):
    cfg = _cfg("eval.probes=false", "eval.splits=[\"val\"]")
    one = evaluate(eval_ws, cfg, run="b", force=True, log=lambda m: None, show_progress=False)
    two = evaluate(eval_ws, cfg, run="b", force=True, log=lambda m: None, show_progress=False)
    for r in (one, two):
        r.pop("seconds"), r.pop("seconds_by_part")
    assert one == two
    assert "probes" not in one


def test_cli_eval_and_compare_print_and_write_the_side_by_side(eval_ws, capsys):
    sets = [x for s in EVAL_SETS for x in ("--set", s)]
    assert main(["eval", "-w", str(eval_ws.root), "--run", "b", *sets]) == 0
    assert main(["eval", "-w", str(eval_ws.root), "--run", "a", *sets]) == 0
    capsys.readouterr()
    assert main(["eval", "-w", str(eval_ws.root), "--compare", "a", "b"]) == 0
    printed = capsys.readouterr().out
    assert "# Evaluation: `a` vs `b`" in printed and "val bits/byte" in printed
    path = eval_ws.eval_compare("a", "b")
    assert path.is_file() and path.with_suffix(".json").is_file()
    md, again = compare_runs(eval_ws, "a", "b")
    assert again == path and md in printed


def test_cli_eval_errors_are_one_line_naming_what_to_do(eval_ws, capsys):
    assert main(["eval", "-w", str(eval_ws.root), "--compare", "a", "nosuchrun"]) == 2
    assert "londinium eval --run nosuchrun" in capsys.readouterr().err
    assert main(["eval", "-w", str(eval_ws.root), "--run", "nosuchrun"]) == 2
    assert "nosuchrun" in capsys.readouterr().err
    assert main(["eval", "-w", str(eval_ws.root), "--run", "a", "--set", "eval.prompt_split=train"]) == 2
    assert "eval.prompt_split" in capsys.readouterr().err
    assert main(["eval", "-w", str(eval_ws.root), "--run", "a", "--text", "/nonexistent.txt"]) == 2
    assert "/nonexistent.txt" in capsys.readouterr().err


def test_a_text_file_that_is_not_utf8_fails_before_the_report_card_is_forgotten(eval_ws, tmp_path, capsys):
    """The --text files are read whole before the stage starts: one that is no UTF-8 text used to be
    found after the perplexity of every split, when the run's recorded report card was already dropped."""
    sets = [x for s in EVAL_SETS for x in ("--set", s)]
    assert main(["eval", "-w", str(eval_ws.root), "--run", "b", *sets]) == 0
    recorded = eval_ws.manifest()["eval/b"]
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x00\xff\xfe" * 100)
    capsys.readouterr()
    assert main(["eval", "-w", str(eval_ws.root), "--run", "b", *sets, "--text", str(binary)]) == 2
    out = capsys.readouterr()
    assert out.err.strip() == f"londinium: error: --text {binary}: not UTF-8 text (byte 1); convert it to UTF-8"
    assert "perplexity" not in out.out and eval_ws.manifest()["eval/b"] == recorded


def test_a_bad_probe_file_in_the_config_is_named(eval_ws, tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("[[probe]]\nid = 'x'\n", encoding="utf-8")
    with pytest.raises(LondiniumError, match="missing field 'prompt'"):
        evaluate(eval_ws, _cfg(f"eval.probe_file='{bad}'"), run="a", log=lambda m: None, show_progress=False)


def test_stride_larger_than_context_is_a_config_error(eval_ws):
    with pytest.raises(ConfigError, match="eval.stride"):
        evaluate(eval_ws, _cfg("eval.stride=64"), run="a", force=True, log=lambda m: None, show_progress=False)


def test_checkpoint_from_another_tokenizer_is_refused(tmp_path):
    from londinium.checkpoint import CheckpointError

    ws = Workspace(tmp_path / "ws")
    write_corpus(ws, train_per_source=2)
    save_tokenizer(tokenizer(), ws)
    model = tiny_gpt()
    cfg = Config()
    cfg.model = model.config
    save_checkpoint(ws.checkpoints_dir("x"), 1, model, {}, to_toml(cfg), {"tokenizer_sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="another tokenizer"):
        evaluate(ws, _cfg(), run="x", log=lambda m: None, show_progress=False)
