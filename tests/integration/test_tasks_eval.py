"""The task set end to end: `londinium tasks build` on a corpus that is not period English cuts the
generic tasks only; `londinium eval --tasks` through the real CLI answers the held-out items of a
corpus shaped like the default one with a tiny trained model and writes the task table with its
baselines and format compliance; `eval --compare` refuses runs scored on different task sets."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pytest
from helpers.docs_corpus import write_docs_corpus
from helpers.period_corpus import write_period_corpus

from londinium.cli import main
from londinium.config import CorpusConfig, DataConfig, TokenizerConfig, load_config
from londinium.eval.tasks import shots_for
from londinium.tasks.catalog import GENERIC
from londinium.tasks.items import read_items
from londinium.workspace import Workspace

MODEL = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.context=256", "train.batch_size=4",
         "train.eval_every=10", "train.eval_batches=1", "train.warmup_steps=2", "train.threads=1"]
EVAL = ["eval.splits=['val']", "eval.max_docs=2", "eval.prompts=0", "eval.cloze=false", "eval.probes=false",
        "tasks.train_items=12", "tasks.eval_items=3", "tasks.passage_words=12", "tasks.max_tokens=6", "tasks.shots=1"]
QUIET = dict(log=lambda m: None)


@pytest.fixture(scope="module")
def period(tmp_path_factory) -> Workspace:
    """The made-up period corpus (profile period-london), its tokenizer and shards, and two 10-step runs."""
    from londinium.data.shards import prepare_shards
    from londinium.tokenizer.train import train_tokenizer
    from londinium.train.trainer import train

    ws = Workspace(tmp_path_factory.mktemp("period") / "ws")
    write_period_corpus(ws)
    train_tokenizer(ws, TokenizerConfig(vocab_size=384, compare_gpt2=False, compare_sources=False), **QUIET)
    prepare_shards(ws, DataConfig(), **QUIET)
    for run in ("a", "b"):
        train(ws, load_config(None, [*MODEL, "train.max_steps=10", f"train.run_name={run}"]), **QUIET)
    return ws


def _sets(extra: list[str] = ()) -> list[str]:
    return [x for s in [*EVAL, *extra] for x in ("--set", s)]


def test_eval_tasks_through_the_cli_writes_the_task_table_with_baselines(period):
    done = subprocess.run([sys.executable, "-m", "londinium", "eval", "-w", str(period.root), "--run", "a", "--tasks", *_sets()],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(period.eval_results("a").read_text(encoding="utf-8"))
    block = results["tasks"]
    assert block["shots"] == 1  # a base model: few-shot
    assert list(block["tasks"]) == [*GENERIC, "kjv_verse", "kjv_reference", "speaker", "modernize", "next_verse_line"]
    md = period.eval_report_md("a").read_text(encoding="utf-8")
    assert "## Tasks" in md
    for name, t in block["tasks"].items():
        items = list(read_items(period.task_items(name)))
        train = Counter(i.answer.strip() for i in items if i.split == "train")
        for split in ("val", "test"):
            held = [i for i in items if i.split == split]
            s, rows = t["splits"][split]["summary"], t["splits"][split]["items"]
            assert s["n"] == len(rows) == len(held) > 0 and 0 <= s["score"] <= 1 and 0 <= s["format"] <= 1
            assert all(r["shots"] <= 1 for r in rows)
            if t["baseline"] == "majority" and not held[0].distractors:  # exact match against the most frequent answer
                top = train.most_common(1)[0][0]
                assert s["baseline"] == pytest.approx(sum(i.answer.strip() == top for i in held) / len(held))
            if name == "modernize":  # copying the Folio line: some chrF, no word right
                assert 0 < s["baseline"] < 1 and s["word_accuracy"] <= 1
            assert f"| `{name}` | {split} | {t['metric']} | {s['n']} |" in md
    assert results["instruments"]["tasks"]["items"].keys() == block["tasks"].keys()


def test_compare_refuses_runs_scored_on_different_task_sets(period, capsys):
    root, two = str(period.root), ["tasks.tasks=['speaker', 'modernize']"]
    assert main(["eval", "-w", root, "--run", "a", "--tasks", *_sets(two)]) == 0
    assert main(["eval", "-w", root, "--run", "b", "--tasks", *_sets([*two, "tasks.seed=7"])]) == 0
    capsys.readouterr()
    assert main(["eval", "-w", root, "--compare", "a", "b"]) == 2
    err = capsys.readouterr().err
    assert "different instruments (tasks" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "-w", root, "--run", "b", "--tasks", "--shots", "0", *_sets(two)]) == 0  # the same set as "a"
    capsys.readouterr()
    assert main(["eval", "-w", root, "--compare", "a", "b"]) == 0
    out = capsys.readouterr().out
    assert "task speaker val choice" in out and "task modernize test format" in out
    assert json.loads(period.eval_results("b").read_text(encoding="utf-8"))["tasks"]["shots"] == 0
    assert main(["eval", "-w", root, "--run", "b", "--tasks", "--shots", "-1", *_sets()]) == 2


def test_a_frequency_penalty_is_part_of_the_instrument(period, capsys):
    """tasks.frequency_penalty changes the answers' decoding: the eval re-runs, records it, and is not
    compared with a plain-greedy one."""
    root, two = str(period.root), ["tasks.tasks=['speaker', 'modernize']"]
    assert main(["eval", "-w", root, "--run", "a", "--tasks", *_sets(two)]) == 0
    plain = json.loads(period.eval_results("a").read_text(encoding="utf-8"))
    assert main(["eval", "-w", root, "--run", "b", "--tasks", "--shots", "1", *_sets([*two, "tasks.frequency_penalty=1.0"])]) == 0
    tuned = json.loads(period.eval_results("b").read_text(encoding="utf-8"))
    assert "frequency_penalty" not in plain["instruments"]["tasks"] and tuned["instruments"]["tasks"]["frequency_penalty"] == 1.0
    capsys.readouterr()
    assert main(["eval", "-w", root, "--compare", "a", "b"]) == 2
    assert "different instruments (tasks" in capsys.readouterr().err


def test_a_fine_tuned_run_is_asked_zero_shot_unless_told():
    sft, base = (SimpleNamespace(train=SimpleNamespace(objective=o)) for o in ("sft", "next-token"))
    assert (shots_for(sft, None, 3), shots_for(base, None, 3), shots_for(sft, 2, 3)) == (0, 3, 2)
    # A student distilled on conversations (`distill --sft`) is an assistant too; one distilled on text is not.
    sft_student, text_student = (SimpleNamespace(train=SimpleNamespace(objective="distill"), distill=SimpleNamespace(sft=s))
                                 for s in (True, False))
    assert (shots_for(sft_student, None, 3), shots_for(text_student, None, 3)) == (0, 3)


def test_the_stage_on_a_corpus_without_a_profile_cuts_the_generic_tasks_only(tmp_path, capsys):
    from londinium.corpus.build import build_corpus

    corpus = write_docs_corpus(tmp_path)
    ws = Workspace(tmp_path / "ws")
    build_corpus(ws, CorpusConfig(sources=str(corpus.registry), cache_dir=str(tmp_path / "cache")))
    assert main(["tasks", "build", "-w", str(ws.root), "--set", "tasks.eval_items=5", "--set", "tasks.passage_words=12"]) == 0
    card = json.loads((ws.stage_dir("tasks") / "card.json").read_text(encoding="utf-8"))
    assert [c["task"] for c in card["tasks"]] == list(GENERIC)
    assert not any(ws.task_dir(n).exists() for n in ("kjv_verse", "speaker", "modernize"))
    assert card["tasks"][1]["items"]["train"] > 0 and card["tasks"][1]["items"]["val"] > 0  # next_line
    assert "tasks: next_word:" in capsys.readouterr().out
    assert main(["tasks", "build", "-w", str(ws.root), "--task", "sonnets"]) == 2
    assert "unknown task 'sonnets'" in capsys.readouterr().err
