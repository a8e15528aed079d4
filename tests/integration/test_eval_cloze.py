"""`londinium eval` on a corpus that is not period English (adopted, so its profile is neutral): a
trained tiny model is scored on the cloze set through the real CLI, and the report card shows the
cloze accuracy with its standard error and nothing of the period profile (no probes, no period-word
or anachronism columns). `eval --compare` refuses runs scored on different cloze sets and, on the
same set, gives the paired difference."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.prose import modern_corpus_rows

from londinium.cli import main
from londinium.config import DataConfig, TokenizerConfig, load_config
from londinium.files import write_jsonl
from londinium.workspace import Workspace

MODEL = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.context=64", "train.batch_size=4",
         "train.eval_every=20", "train.eval_batches=1", "train.warmup_steps=2", "train.threads=1"]
EVAL = ["eval.splits=['val']", "eval.max_docs=2", "eval.prompts=2", "eval.prompt_chars=80", "eval.reference_words=8",
        "eval.max_new_tokens=8", "eval.temperatures=[0.0]", "eval.cloze_items=150", "eval.cloze_context_words=20",
        "eval.batch_size=16", "train.threads=1"]


@pytest.fixture(scope="module")
def modern(tmp_path_factory) -> Workspace:
    """The modern technical corpus, tokenizer and shards, and two runs: 40 and 4 steps. (The corpus is
    random words, so no model beats chance on its cloze: these tests are about the plumbing.)"""
    from londinium.data.shards import prepare_shards
    from londinium.tokenizer.train import train_tokenizer
    from londinium.train.trainer import train

    ws = Workspace(tmp_path_factory.mktemp("modern") / "ws")
    for split, n in (("train", 40), ("val", 12), ("test", 6)):
        write_jsonl(ws.corpus_split(split), modern_corpus_rows(split, n))
    ws.adopt("corpus", [ws.corpus_split(s) for s in ("train", "val", "test")])
    quiet = dict(log=lambda m: None)
    train_tokenizer(ws, TokenizerConfig(vocab_size=384, compare_gpt2=False, compare_sources=False), **quiet)
    prepare_shards(ws, DataConfig(), **quiet)
    for run, steps in (("long", 40), ("short", 4)):
        train(ws, load_config(None, [*MODEL, f"train.max_steps={steps}", f"train.run_name={run}"]), **quiet)
    return ws


def _sets(extra: list[str] = ()) -> list[str]:
    return [x for s in [*EVAL, *extra] for x in ("--set", s)]


def test_the_cli_scores_the_cloze_and_shows_nothing_of_the_period_profile(modern):
    done = subprocess.run([sys.executable, "-m", "londinium", "eval", "-w", str(modern.root), "--run", "long", *_sets()],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(modern.eval_results("long").read_text(encoding="utf-8"))
    assert results["profile"] == "neutral" and "probes" not in results
    cloze = results["cloze"]["summary"]["overall"]
    assert cloze["n"] == len(results["cloze"]["items"]) > 100 and 0 < cloze["accuracy_se"] < 0.1
    assert results["cloze"]["file"] == str(modern.task_items("cloze"))
    assert not any(k in m for m in results["generation"]["metrics"].values() for k in ("period_share", "anachronisms"))
    md = modern.eval_report_md("long").read_text(encoding="utf-8")
    assert "corpus profile `neutral`" in md and "## Cloze" in md and f"{100 * cloze['accuracy']:.1f}% ± {100 * cloze['accuracy_se']:.1f}" in md
    assert "## Probes" not in md and "## Domain probes" not in md
    assert "period words" not in md.lower() and "anachronism" not in md.lower()
    assert "Thou" not in md


def test_compare_refuses_different_cloze_sets_and_pairs_items_on_the_same_set(modern, capsys):
    root = str(modern.root)
    assert main(["eval", "-w", root, "--run", "long", *_sets()]) == 0
    assert main(["eval", "-w", root, "--run", "short", *_sets(["eval.cloze_seed=7"])]) == 0
    capsys.readouterr()
    assert main(["eval", "-w", root, "--compare", "short", "long"]) == 2
    err = capsys.readouterr().err
    assert "different instruments (cloze" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert not modern.eval_compare("short", "long").exists()

    assert main(["eval", "-w", root, "--run", "short", *_sets()]) == 0  # the same set as "long"
    capsys.readouterr()
    assert main(["eval", "-w", root, "--compare", "short", "long"]) == 0
    out = capsys.readouterr().out
    assert "| cloze accuracy |" in out and "Paired item by item" in out
    # the paired difference is the mean of the per-item differences of the two results
    items = [{r["id"]: r for r in json.loads(modern.eval_results(run).read_text())["cloze"]["items"]} for run in ("short", "long")]
    def margin(row: dict) -> float:
        return row["logprobs"][0] - max(row["logprobs"][1:])

    diff = sum(margin(items[1][i]) - margin(items[0][i]) for i in items[0]) / len(items[0])
    assert f"margin {diff:+.3f} ± " in out
