"""The tool-use task: a line of a document asked about, a search_corpus call that quotes it, the
document's passage as the tool's result, an answer that cites that result; and SFT reads it with the
call and the answer trained on, the result only read."""

from __future__ import annotations

import json

from helpers.period_corpus import period_corpus

from londinium.config import TasksConfig
from londinium.tasks import check, conversations, instruction
from londinium.tasks.build import build_tasks
from londinium.tasks.cut import TaskSpec
from londinium.tasks.messages import tools_for
from londinium.tasks.tool_search import SNIPPET_CHARS, TOOL, cut_tool_search, messages
from londinium.train.sft_data import task_conversations, tokenize
from londinium.workspace import Workspace

CORPUS = period_corpus()


def test_the_call_quotes_a_line_of_the_document_and_the_answer_cites_its_result():
    for split in ("train", "val", "test"):
        items = cut_tool_search(CORPUS, TaskSpec(split=split, items=30))
        assert items
        docs = {d["id"]: d for d in CORPUS[split]}  # a KeyError: an item of another split's document
        for item in items:
            doc = docs[item.doc_id]
            phrase, passage = item.prompt.split("\n\n")
            assert phrase in " ".join(doc["text"].split()) and phrase in passage and len(passage) <= SNIPPET_CHARS
            asked, call, result, answer = messages(item)
            assert [m["role"] for m in (asked, call, result, answer)] == ["user", "assistant", "tool", "assistant"]
            assert f'"{phrase}"' in asked["content"] and call["content"] is None
            assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"query": phrase}
            assert result["content"].split("\n") == [f"{' '.join(doc['title'].split())} ({doc['source']})", passage]
            assert answer["content"] == item.answer == result["content"].split("\n")[0]
            assert check("tool_search", answer["content"], item) == 1.0 and instruction(item) == [asked, call, result]


def test_sft_trains_the_call_and_the_answer_and_only_reads_the_result(tmp_path, tiny_workspace):
    from helpers.period_corpus import write_period_corpus

    from londinium.tokenizer.codec import load_tokenizer

    ws = Workspace(tmp_path / "ws")
    write_period_corpus(ws)
    build_tasks(ws, TasksConfig(tasks=["tool_search"], train_items=8, eval_items=4), log=lambda m: None)
    rows = list(conversations(ws, "train", ["tool_search"]))
    assert len(rows) == 8 and all(r["tools"] == tools_for("tool_search") == [TOOL] for r in rows)
    chats = task_conversations(ws, ["train"], ["tool_search"])["train"]
    tokenizer = load_tokenizer(tiny_workspace)  # any byte-level BPE: the masks are what is checked
    examples, too_long = tokenize(chats, tokenizer, 4096)
    assert not too_long and len(examples) == 8
    for chat, e in zip(chats, examples):
        trained = tokenizer.decode(e.ids[e.mask].tolist(), skip_special_tokens=False)
        read = tokenizer.decode(e.ids[~e.mask].tolist(), skip_special_tokens=False)
        call, result, answer = (m for m in chat.messages[1:])
        assert trained == (f'<tool_call>\n{{"name":"search_corpus","arguments":{call["tool_calls"][0]["function"]["arguments"]}}}'
                           f'\n</tool_call><|end|>{answer["content"]}<|end|>')
        assert result["content"] in read and "search_corpus" in read


def test_default_and_a_named_task_train_together(tiny_workspace):
    from londinium.tasks.messages import default_tasks
    from londinium.train.sft_data import task_names

    mix = list(default_tasks(tiny_workspace))
    assert task_names(tiny_workspace, ["default", "tool_search", mix[0]]) == [*mix, "tool_search"]
    assert task_names(tiny_workspace, ["tool_search"]) == ["tool_search"] and task_names(tiny_workspace, []) == []
