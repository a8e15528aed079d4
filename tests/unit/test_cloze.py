"""The cloze set cut from a small corpus of today's technical English (not period text): items only
from the held-out split, well-formed and traceable to their document, distractors that differ from
the answer and cannot be told from it by frequency, the same bytes from the same corpus and seed;
and its scoring by the probes' scorer, with clustered standard errors."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from eval_fixtures import one_thread_no_grad  # noqa: F401  (autouse)
from helpers.prose import modern_corpus_rows

from londinium.data.documents import iter_texts
from londinium.eval.stats import mean_se, paired_difference
from londinium.files import write_jsonl
from londinium.tasks.build import build_cloze
from londinium.tasks.cloze import ClozeSpec, DistractorPool, word_counts
from londinium.tasks.items import TaskError, read_items
from londinium.workspace import Workspace

SPEC = ClozeSpec(split="val", items=150, context_words=20)
QUIET = dict(log=lambda m: None)


def _workspace(root) -> Workspace:
    ws = Workspace(root)
    for split, n in (("train", 40), ("val", 12), ("test", 6)):
        write_jsonl(ws.corpus_split(split), modern_corpus_rows(split, n))
    ws.adopt("corpus", [ws.corpus_split(s) for s in ("train", "val", "test")])
    return ws


@pytest.fixture(scope="module")
def modern(tmp_path_factory) -> Workspace:
    ws = _workspace(tmp_path_factory.mktemp("cloze") / "ws")
    build_cloze(ws, SPEC, **QUIET)
    return ws


def _rows(ws: Workspace, split: str) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, ws.corpus_split(split).read_text(encoding="utf-8").splitlines())}


def test_items_come_only_from_held_out_documents_and_point_at_their_text(modern):
    items = list(read_items(modern.task_items("cloze")))
    assert 100 <= len(items) <= SPEC.items
    val, train_groups = _rows(modern, "val"), {r["group"] for r in _rows(modern, "train").values()}
    assert len({i.doc_id for i in items}) == len(val)  # spread over every held-out document
    for item in items:
        doc = val[item.doc_id]  # a val document, never a train one
        assert item.split == "val" and item.group == doc["group"] not in train_groups
        text = doc["text"]
        assert text[item.start:item.end] == item.answer and text[item.prompt_start:item.start] == item.prompt
        assert item.answer.startswith(" ") and item.answer[1:].isalpha()
        assert len(item.prompt.split()) >= SPEC.context_words  # the passage before the masked word
    assert len({i.id for i in items}) == len(items)


def test_distractors_differ_from_the_answer_and_are_words_of_the_corpus_like_it(modern):
    counts = word_counts(iter_texts(modern.corpus_split("train")))
    for item in read_items(modern.task_items("cloze")):
        assert len(item.distractors) == SPEC.choices - 1 == len(set(item.distractors))
        answer = item.answer.strip()
        for d in item.distractors:
            word = d.strip()
            assert d == " " + word and word.lower() != answer.lower()
            assert counts[word] >= SPEC.min_count and abs(len(word) - len(answer)) <= 2
            assert word.islower() == answer.islower()
    card = json.loads(modern.task_card("cloze").read_text(encoding="utf-8"))
    # frequency alone does not find the answer: guessing the most frequent choice scores about chance
    assert card["chance"] == 0.25 and abs(card["unigram_accuracy"] - 0.25) < 0.1
    assert card["items"] == len(list(read_items(modern.task_items("cloze")))) and card["note"] == ""


def test_the_same_corpus_and_seed_give_the_same_set_and_a_smaller_set_is_its_prefix(modern, tmp_path):
    again = _workspace(tmp_path / "again")
    build_cloze(again, SPEC, **QUIET)
    assert again.task_items("cloze").read_bytes() == modern.task_items("cloze").read_bytes()
    build_cloze(again, ClozeSpec(split="val", items=40, context_words=20), **QUIET)
    full = [i.to_dict() for i in read_items(modern.task_items("cloze"))]
    assert [i.to_dict() for i in read_items(again.task_items("cloze"))] == full[:40]
    build_cloze(again, ClozeSpec(split="val", items=150, context_words=20, seed=7), **QUIET)
    assert again.task_items("cloze").read_bytes() != modern.task_items("cloze").read_bytes()


def test_a_split_too_small_for_any_item_is_a_note_not_an_error(modern, tmp_path):
    logs: list[str] = []
    build_cloze(modern, ClozeSpec(split="test", context_words=5000), log=logs.append)
    assert list(read_items(modern.task_items("cloze"))) == []
    note = json.loads(modern.task_card("cloze").read_text(encoding="utf-8"))["note"]
    assert "eval.cloze_context_words" in note and any(note in m for m in logs)
    build_cloze(modern, SPEC, **QUIET)  # back to the module's set


def test_frequent_words_are_never_masked():
    counts = Counter({"the": 500, "of": 300, "socket": 20, "client": 18, "packet": 15, "bucket": 12, "rarely": 2, "sender": 9})
    pool = DistractorPool(counts, skip_share=0.5, min_count=5)
    assert pool.eligible == {"socket", "client", "packet", "bucket", "sender"}  # not "the" (half the words), not "rarely"
    picked = pool.distractors("socket", 3, random.Random(0))
    assert sorted(picked) == ["bucket", "client", "packet"]  # not "sender": another ending
    assert pool.distractors("socket", 4, random.Random(0)) is None  # too few words like it


def test_a_bad_task_line_is_named(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a", "task": "cloze", "split": "val", "prompt": "p", "answer": " x", "distractors": [" x"]}\n',
                    encoding="utf-8")
    with pytest.raises(TaskError, match=r"line 1: the answer and distractors must all differ"):
        list(read_items(path))
    path.write_text('{"id": "a", "task": "cloze", "split": "val", "prompt": "p", "answer": " x", "start": "9"}\n', encoding="utf-8")
    with pytest.raises(TaskError, match=r"items.jsonl: line 1: field 'start' must be a whole number"):
        list(read_items(path))


def test_scoring_uses_the_probe_scorer_and_margins_are_answer_minus_best_distractor(modern):
    from eval_fixtures import bos, enc, tiny_gpt

    from londinium.eval.cloze import as_probes, score_cloze, summarize
    from londinium.eval.probes import score_probes

    items = list(read_items(modern.task_items("cloze")))[:20]
    model = tiny_gpt(context=64)
    rows = score_cloze(model, enc, items, bos(), 64, batch_size=8)
    direct = score_probes(model, enc, as_probes(items), bos(), 64, batch_size=8)
    for row, p in zip(rows, direct):
        assert row["logprobs"] == [round(x, 4) for x in p.logprobs] and row["correct"] == p.correct
        assert row["margin"] == pytest.approx(p.logprobs[0] - max(p.logprobs[1:]), abs=1e-3)
    s = summarize(rows, 0.25)["overall"]
    assert s["n"] == 20 and s["accuracy"] == sum(r["correct"] for r in rows) / 20 and s["accuracy_se"] > 0


def test_standard_errors_are_clustered_by_document_and_paired_differences_cancel_what_is_shared():
    values = [1.0, 1.0, 0.0, 0.0]
    assert mean_se(values)[1] == pytest.approx((1 / 3) ** 0.5 / 2)  # independent items: sd / sqrt(n)
    # the same values in two documents that each agree with themselves: two effective items, not four
    assert mean_se(values, ["a", "a", "b", "b"])[1] == pytest.approx(0.5)
    a = {"1": 0.0, "2": 1.0, "3": 0.0, "4": 1.0}
    b = {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0}
    diff, se, n = paired_difference(a, b, {k: k for k in a})
    assert (diff, n) == (0.5, 4) and se == pytest.approx(mean_se([1.0, 0.0, 1.0, 0.0])[1])
