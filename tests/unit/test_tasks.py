"""The task set cut from a corpus shaped like the default one: items of a split only from that
split's documents and traceable to them, the same items from the same corpus and seed, each task's
checker on hand cases, the Folio -> modern alignment on a small pair, and the conversations
supervised fine-tuning reads (the answer last, and left out of the instruction)."""

from __future__ import annotations

import pytest
from helpers.period_corpus import period_corpus, write_period_corpus

from londinium.errors import ConfigError
from londinium.tasks import check, conversations, instruction
from londinium.tasks.build import build_tasks
from londinium.tasks.catalog import GENERIC, TASKS, profile_tasks
from londinium.tasks.cut import TaskSpec
from londinium.tasks.items import TaskError, TaskItem, read_items
from londinium.tasks.messages import messages
from londinium.tasks.modernize import align, word_accuracy
from londinium.config import TasksConfig
from londinium.train.sft_data import task_conversations
from londinium.workspace import Workspace

CORPUS = period_corpus()
SMALL = TasksConfig(train_items=40, eval_items=20, passage_words=20)


def _cut(name: str, split: str) -> list[TaskItem]:
    return TASKS[name].cut(CORPUS, TaskSpec(split=split, items=40, passage_words=20))


@pytest.mark.parametrize("name", [n for n in TASKS if n != "arith"])  # arith is generated, not cut
def test_items_of_a_split_come_from_its_documents_and_point_into_them(name):
    train_groups = {d["group"] for d in CORPUS["train"]}
    for split in ("train", "val", "test"):
        items = _cut(name, split)
        assert items, (name, split)
        docs = {d["id"]: d for d in CORPUS[split]}
        for item in items:
            assert item.split == split and item.task == name and item.id.startswith(f"{name}-{split}-")
            text = docs[item.doc_id]["text"]  # KeyError: an item from another split's document
            if item.start < item.end:  # the answer is a slice of the document ...
                assert text[item.start:item.end] == item.answer
            else:  # ... or a label of the passage that ends where the answer would start
                assert item.start == item.end
            if item.prompt_start >= 0:
                assert text[item.prompt_start:item.start] == item.prompt
            assert item.answer.strip() and item.answer not in item.distractors
            assert split == "train" or item.group not in train_groups  # nothing held out was seen in pre-training


def test_the_same_corpus_and_seed_give_the_same_items_and_another_seed_others():
    spec = TaskSpec(split="val", items=20, passage_words=20)
    for name, task in TASKS.items():
        assert task.cut(period_corpus(), spec) == task.cut(period_corpus(), spec), name
    other = TaskSpec(split="val", items=20, passage_words=20, seed=7)
    assert TASKS["speaker"].cut(CORPUS, other) != TASKS["speaker"].cut(CORPUS, spec)


def test_kjv_references_count_verses_across_the_documents_of_a_chapter():
    [long] = [d for d in CORPUS["train"] if d["title"] == "Genesis 1" and d["id"].endswith("#10")]
    later = [d for d in CORPUS["train"] if d["title"] == "Genesis 1" and d["id"].endswith("#11")][0]
    items = [i for i in _cut("kjv_reference", "train") if i.doc_id == later["id"]]
    assert items
    for i in items:  # the second document of Genesis 1 starts at verse 10
        n = int(i.answer.split(":")[1])
        assert later["text"].split("\n")[n - 1 - len(long["text"].split("\n"))] == i.prompt


def test_speakers_are_the_headings_and_the_list_of_characters_is_not_a_speech():
    items = _cut("speaker", "train")
    assert {i.answer for i in items} <= {"KING HENRY", "WARWICK", "YORK", "QUEEN MARGARET", "CLIFFORD"}
    assert not any("an earl" in i.prompt for i in items)
    assert all(set(i.distractors) < set(("KING HENRY", "WARWICK", "YORK", "QUEEN MARGARET", "CLIFFORD")) for i in items)


def test_folio_lines_align_with_the_modern_lines_of_the_same_words():
    modern = "ACT I.\nWe have sworn upon our love\nTo live and give the crown away\nA line the Folio lacks\nAnd this is the same in both"
    folio = "ACT I.\nWe haue sworne vpon our loue\nA line onely here\nTo liue and giue the crowne away\nAnd this is the same in both"
    pairs = [(folio[slice(*f)], modern[slice(*m)]) for f, m in align(folio, modern)]
    assert pairs == [("We haue sworne vpon our loue", "We have sworn upon our love"),
                     ("To liue and giue the crowne away", "To live and give the crown away")]  # not the lines alike or alone


def test_word_accuracy_counts_only_the_words_that_differ():
    folio, modern = "We haue sworne vpon our loue", "We have sworn upon our love"
    assert word_accuracy(folio, modern, modern) == 1.0
    assert word_accuracy(folio, modern, folio) == 0.0  # copying the input
    assert word_accuracy(folio, modern, "We have sworne upon our loue") == 0.5
    assert word_accuracy(modern, modern, modern) is None


def test_checkers_score_hand_cases():
    speaker = TaskItem(id="s", task="speaker", split="val", prompt="Off with his head!", answer="KING HENRY", distractors=("YORK", "WARWICK"))
    assert check("speaker", "KING HENRY", speaker) == 1.0
    assert check("speaker", " King Henry.<|end|>", speaker) == 1.0  # case, full stop, end marker
    assert check("speaker", "YORK", speaker) == 0.0
    assert check("speaker", "KING HENRY and YORK", speaker) == 0.0
    ref = TaskItem(id="r", task="kjv_reference", split="val", prompt="In the beginning", answer="Genesis 1:1")
    assert check("kjv_reference", "Genesis 1:1\nAnd more", ref) == 1.0  # the first line is the answer
    assert check("kjv_reference", "Genesis 1:2", ref) == 0.0
    line = TaskItem(id="m", task="modernize", split="val", prompt="We haue sworne vpon our loue", answer="We have sworn upon our love")
    assert check("modernize", "We have sworn upon our love", line) == pytest.approx(1.0)
    copy, half = check("modernize", line.prompt, line), check("modernize", "We have sworne upon our loue", line)
    assert 0 < copy < half < 1
    assert check("modernize", "", line) == 0.0


def test_profile_tasks_are_checked_names():
    assert profile_tasks("kjv_verse, speaker") == ("kjv_verse", "speaker")
    with pytest.raises(ConfigError, match="unknown task.*known tasks: next_word"):
        profile_tasks("kjv_verse, sonnets")


def test_conversations_end_with_the_answer_the_instruction_leaves_out(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(TaskError, match="tasks build"):
        list(conversations(ws, "train", ["speaker"]))
    write_period_corpus(ws)
    names = build_tasks(ws, SMALL, log=lambda m: None)
    assert names == [*GENERIC, "kjv_verse", "kjv_reference", "speaker", "modernize", "next_verse_line"]  # the profile's mix
    rows = list(conversations(ws, "val"))
    assert rows == list(conversations(ws, "val", None))  # deterministic
    assert [r["task"] for r in rows] == sorted((r["task"] for r in rows), key=names.index)  # task by task
    items = {i.id: i for n in names for i in read_items(ws.task_items(n))}
    for row in rows:
        item = items[row["id"]]
        assert item.split == "val" and [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][-1]["content"] == item.answer.strip() and check(item.task, row["messages"][-1]["content"], item) == 1.0
        assert instruction(item) == row["messages"][:-1]
    speaker = [items[r["id"]] for r in rows if r["task"] == "speaker"][0]
    for choice in speaker.choices:  # multiple choice lists the choices
        assert choice in instruction(speaker)[-1]["content"]
    shots = [i for i in items.values() if i.task == "speaker" and i.split == "train"][:2]
    asked = instruction(speaker, shots)
    assert [m["role"] for m in asked] == ["user", "assistant", "user", "assistant", "user"] and asked[1]["content"] == shots[0].answer
    assert [r["task"] for r in conversations(ws, "train", ["modernize"])] == ["modernize"] * SMALL.train_items
    # fine-tuning reads train and val in one pass over each file: the same conversations as split by split
    both = task_conversations(ws, ("train", "val"), ["default"])
    for split in ("train", "val"):
        one_by_one = [i for n in names for i in read_items(ws.task_items(n)) if i.split == split]
        assert [(c.where, c.task, c.messages) for c in both[split]] == \
            [(f"task item {i.id}", i.task, tuple(messages(i))) for i in one_by_one]
    md = (ws.stage_dir("tasks") / "card.md").read_text(encoding="utf-8")
    assert "| speaker | choice |" in md and "| modernize | chrf |" in md


def test_the_two_editions_of_a_play_pair_by_their_group_not_their_file_names():
    renamed = {split: [{**d, "id": d["id"].replace("_gut_f.txt", "e_gut_f.txt")} for d in rows] for split, rows in CORPUS.items()}
    spec = TaskSpec(split="val", items=40)
    assert TASKS["modernize"].cut(renamed, spec) == TASKS["modernize"].cut(CORPUS, spec) != []
