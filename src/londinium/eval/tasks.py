"""`londinium eval --tasks`: the task set answered by generation, each answer checked by a program.

Each held-out item (val and test) is asked as a chat: the item's instruction (`tasks.instruction`)
through the chat template, encoded as the server encodes it (`serve.prompts.encode_chat`: role
markers are control tokens, content is text), and answered greedily by the engine, all items of a
task and split in one batch, stopping at `<|end|>`. A base model has never seen the template in
use, so it is shown `shots` solved train items first (few-shot; fewer when the context is short); a
fine-tuned run (SFT, SFT distillation or RL: `sft_run.takes_turns`) is asked zero-shot. Per task and split:

- the score: accuracy (choice), exact match or chrF (0-1) as the task's metric says (`tasks.check`),
  with its standard error clustered by document;
- the baseline on the same items: the train split's most frequent answer, or the input copied;
- format compliance: the answer ended with `<|end|>` within `tasks.max_tokens` tokens and no role
  token leaked into it (`tasks.frequency_penalty` > 0: greedy with OpenAI's frequency penalty on
  the answer's own tokens, which ends the loops a small model falls into without changing what scores);
- for modernize, word accuracy on the words the two spellings differ in.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any, Callable, Sequence

from londinium.eval.stats import mean_se
from londinium.tasks import check, instruction
from londinium.tasks.items import TaskItem

SPLITS = ("val", "test")


def shots_for(run_cfg: Any, asked: int | None, default: int) -> int:
    """Solved examples shown before each question: `asked` (--shots) when given, else none for a
    fine-tuned run and `default` (tasks.shots) for a base model."""
    if asked is not None:
        return asked
    from londinium.train.sft_run import takes_turns

    return 0 if takes_turns(run_cfg) else default


def prompt_ids(tokenizer: Any, item: TaskItem, train: Sequence[TaskItem], shots: int, room: int) -> tuple[list[int], int]:
    """(token ids, shots used) of the chat asking `item` after up to `shots` solved train items
    (the first of the same task, in file order, so every item sees the same examples), as many as fit in `room` tokens."""
    from londinium.serve.prompts import encode_chat
    from londinium.tasks.messages import tools_for

    for k in range(shots, -1, -1):
        ids, _ = encode_chat(tokenizer, instruction(item, train[:k]), tools=tools_for(item.task))
        if len(ids) <= room or k == 0:
            return ids, k
    raise AssertionError("unreachable")


def answer_items(engine: Any, items: Sequence[TaskItem], train: Sequence[TaskItem], shots: int, max_tokens: int,
                 frequency_penalty: float = 0.0) -> list[dict[str, Any]]:
    """One row per item: the model's answer, whether it kept the format, its score and the baseline's."""
    from londinium.infer.chat_template import END_OF_TURN
    from londinium.infer.sampling import SamplingParams
    from londinium.tasks.check import baseline_prediction
    from londinium.tasks.modernize import word_accuracy
    from londinium.tokenizer.codec import SPECIAL_TOKENS

    end = engine.tokenizer.token_to_id(END_OF_TURN)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop_token_ids=[end] if end is not None else [], truncate=True,
                            frequency_penalty=frequency_penalty)
    asked = [prompt_ids(engine.tokenizer, i, train, shots, engine.context - max_tokens) for i in items]
    done = engine.generate([ids for ids, _ in asked], params)
    rows = []
    for item, (ids, used), completion in zip(items, asked, done):
        c = completion.choices[0]
        text = c.text
        leaked = any(t in text for t in SPECIAL_TOKENS)
        row = {"id": item.id, "doc": item.doc_id, "answer": text, "score": round(check(item.task, text, item), 4),
               "baseline": round(check(item.task, baseline_prediction(item.task, item, train), item), 4),
               "format": c.finish_reason == "stop" and bool(c.token_ids) and c.token_ids[-1] == end and not leaked,
               "shots": used, "truncated": len(ids) > engine.context - max_tokens}
        if item.task == "modernize":
            row["word_accuracy"] = word_accuracy(item.prompt, item.answer, text)
        rows.append(row)
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"n": 0}
    docs = [r["doc"] for r in rows]
    score, score_se = mean_se([r["score"] for r in rows], docs)
    base, base_se = mean_se([r["baseline"] for r in rows], docs)
    out = {"n": len(rows), "documents": len(set(docs)), "score": score, "score_se": score_se, "baseline": base, "baseline_se": base_se,
           "format": fmean(float(r["format"]) for r in rows), "shots": fmean(r["shots"] for r in rows),
           "truncated": sum(r["truncated"] for r in rows)}
    wa = [r["word_accuracy"] for r in rows if r.get("word_accuracy") is not None]
    if wa:
        out["word_accuracy"], out["word_accuracy_se"] = mean_se(wa)
    return out


def score_tasks(ws: Any, names: Sequence[str], engine: Any, shots: int, max_tokens: int,
                log: Callable[[str], None] = print, frequency_penalty: float = 0.0) -> dict[str, Any]:
    """The results' "tasks" block: per task its metric and, per held-out split, the summary and rows."""
    from londinium.files import sha256_file
    from londinium.tasks.catalog import task
    from londinium.tasks.messages import task_items

    out: dict[str, Any] = {"shots": shots, "max_tokens": max_tokens, "tasks": {}}
    if frequency_penalty:
        out["frequency_penalty"] = frequency_penalty
    for name in names:
        items = task_items(ws, name)
        train = [i for i in items if i.split == "train"]
        block: dict[str, Any] = {"metric": task(name).metric, "baseline": task(name).baseline,
                                 "sha256": sha256_file(ws.task_items(name)), "splits": {}}
        for split in SPLITS:
            held = [i for i in items if i.split == split]
            if not held:
                continue
            log(f"eval: task {name}: answering {len(held)} {split} items ({shots}-shot)")
            rows = answer_items(engine, held, train, shots, max_tokens, frequency_penalty)
            block["splits"][split] = {"summary": summarize(rows), "items": rows}
        out["tasks"][name] = block
    return out


def instrument(block: dict[str, Any]) -> dict[str, Any]:
    """What the task scores were measured on (eval --compare refuses different ones)."""
    out = {"items": {name: t["sha256"] for name, t in block["tasks"].items()}, "max_tokens": block["max_tokens"]}
    return out | ({"frequency_penalty": block["frequency_penalty"]} if block.get("frequency_penalty") else {})
