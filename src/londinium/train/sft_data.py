"""Conversations for supervised fine-tuning: the user's JSONL and the task set, checked and tokenised.

    read_conversations(path)          -> [Conversation]   a user's file, every line checked
    task_conversations(ws, splits, tasks)                  the task set's conversations, {split: [Conversation]}
    tokenize(conversations, tokenizer, context)            -> [Example] (ids and the assistant mask)

A user's file holds one conversation per line in either format the field uses (OpenAI's chat
fine-tuning files, TRL's datasets):

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}
    {"prompt": "...", "completion": "..."}          (or each a list of messages: TRL's conversational form)

Roles are system (first only), user, assistant and tool (OpenAI's "developer" is read as system); a
content is a string or a list of `{"type": "text", "text": ...}` parts; the last message is the
assistant's. Tool use is OpenAI's too (`train/tool_turns.py`): a line's `tools`, an assistant's
`tool_calls` (trained on, like its text) and `role: "tool"` results (read, not trained on). Other top-level fields (an id, a source) are ignored; anything else wrong is a
`DataError` naming the file, the line and the field. A conversation longer than the model's context
is an error too (it would be cut, and the answer lost): it names the line and both lengths.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from londinium.errors import LondiniumError
from londinium.files import require_file
from londinium.train.tool_turns import check_calls, check_order, check_tools
from londinium.workspace import Workspace

ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system message
MESSAGE_KEYS = {"system": ("role", "content"), "user": ("role", "content"),
                "assistant": ("role", "content", "tool_calls"), "tool": ("role", "content", "tool_call_id")}


class DataError(LondiniumError):
    """Instruction data that cannot be trained on; the message names the file, line and field."""


@dataclass(frozen=True)
class Conversation:
    messages: tuple[dict[str, Any], ...]  # {"role", "content"} (+ tool_calls, tool_call_id), the last the assistant's
    where: str  # "FILE: line N" or "task ITEM-ID": what an error names
    task: str = "data"  # the task it was cut for, or "data" for the user's own
    tools: tuple[dict[str, Any], ...] = ()  # the functions offered (OpenAI's tools), rendered in the system turn

    def digest(self) -> str:
        """sha256 of the messages (and tools): what decides a user conversation's split, and names the data."""
        shown: Any = self.messages if not self.tools else {"messages": self.messages, "tools": self.tools}
        return hashlib.sha256(json.dumps(shown, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Example:
    """A tokenised conversation: ids, and 1 where the token is the assistant's to write."""

    ids: np.ndarray  # int64 [n]
    mask: np.ndarray  # bool [n]
    where: str
    task: str

    def __len__(self) -> int:
        return len(self.ids)


# ---- reading a user's file -----------------------------------------------------------------------


def read_conversations(path: str | Path) -> list[Conversation]:
    """Every conversation of a JSONL file, each line checked (see the module docstring)."""
    path = require_file(path, "instruction data file", DataError)
    out = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            where = f"{path}: line {n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{where}: not UTF-8 text; save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg}); each line holds one conversation") from None
            messages, tools = parse_row(row, where)
            out.append(Conversation(tuple(messages), where, tools=tools))
    if not out:
        raise DataError(f"{path}: holds no conversations; each line is one JSON object with \"messages\" "
                        "or \"prompt\" and \"completion\"")
    return out


def parse_row(row: Any, where: str) -> tuple[list[dict[str, Any]], tuple[dict[str, Any], ...]]:
    """(messages, tools) of one line in either format, checked field by field."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: not a JSON object; expected {{\"messages\": [...]}} or {{\"prompt\": ..., \"completion\": ...}}")
    has_messages, has_pair = "messages" in row, "prompt" in row or "completion" in row
    if has_messages and has_pair:
        raise DataError(f"{where}: has both \"messages\" and \"prompt\"/\"completion\"; give one format per line")
    if has_messages:
        messages = _messages(row["messages"], where, "messages")
    elif has_pair:
        for key in ("prompt", "completion"):
            if key not in row:
                raise DataError(f"{where}: field '{key}' is missing; a prompt-completion line needs both")
        prompt = _side(row["prompt"], where, "prompt", "user")
        completion = _side(row["completion"], where, "completion", "assistant")
        if any(m["role"] != "assistant" for m in completion):
            raise DataError(f"{where}: field 'completion' must hold assistant messages only")
        messages = prompt + completion
    else:
        raise DataError(f"{where}: no \"messages\" and no \"prompt\"/\"completion\" field; "
                        f"found {', '.join(sorted(row)) or 'an empty object'}")
    field = "messages" if has_messages else "prompt"
    _check_turns(messages, where, field)
    tools = check_tools(row.get("tools"), where, DataError)
    check_order(messages, tools, where, field, DataError)
    return messages, tools


def _side(value: Any, where: str, field: str, role: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: field '{field}' is empty")
        return [{"role": role, "content": value}]
    return _messages(value, where, field)


def _messages(value: Any, where: str, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field '{field}' must be a non-empty list of messages")
    return [_message(m, where, f"{field}[{i}]") for i, m in enumerate(value)]


def _message(m: Any, where: str, field: str) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise DataError(f"{where}: field '{field}' must be an object with 'role' and 'content'")
    role = ROLE_ALIASES.get(m.get("role"), m.get("role"))
    if role not in MESSAGE_KEYS:
        raise DataError(f"{where}: field '{field}.role' is {m.get('role')!r}; use system, user, assistant or tool")
    unknown = sorted(set(m) - set(MESSAGE_KEYS[role]))
    if unknown:
        raise DataError(f"{where}: field '{field}.{unknown[0]}' is not supported in a {role} message (names and weights are "
                        f"not part of this chat template); keep {', '.join(repr(k) for k in MESSAGE_KEYS[role])}")
    out: dict[str, Any] = {"role": role}
    if role == "assistant" and m.get("tool_calls") is not None:
        out["tool_calls"] = check_calls(m["tool_calls"], where, f"{field}.tool_calls", DataError)
        if m.get("content") is None:  # a turn that only calls tools has no text (OpenAI sends null)
            return {**out, "content": None}
    if role == "tool":
        if not isinstance(m.get("tool_call_id", ""), str):
            raise DataError(f"{where}: field '{field}.tool_call_id' must be a string (the id of the call it answers)")
        out["tool_call_id"] = m.get("tool_call_id", "")
    content = m.get("content")
    if isinstance(content, list):  # OpenAI's content parts: text only
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise DataError(f"{where}: field '{field}.content[{j}]' is {kind!r}; only text parts "
                                "({\"type\": \"text\", \"text\": ...}) can be trained on")
        content = "".join(part["text"] for part in content)
    if not isinstance(content, str):
        raise DataError(f"{where}: field '{field}.content' must be a string, got {type(content).__name__}")
    if role == "assistant" and not content.strip() and "tool_calls" not in out:
        raise DataError(f"{where}: field '{field}.content' is an empty answer; give the assistant's text")
    return {**out, "content": content}


def _check_turns(messages: list[dict[str, str]], where: str, field: str) -> None:
    for i, m in enumerate(messages):
        if m["role"] == "system" and i > 0:
            raise DataError(f"{where}: field '{field}[{i}].role': a system message may only come first")
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message is the {messages[-1]['role']}'s; a conversation ends with the "
                        "assistant's answer (the turn trained on)")


# ---- the task set ---------------------------------------------------------------------------------


def task_conversations(ws: Workspace, splits: Sequence[str], tasks: Sequence[str]) -> dict[str, list[Conversation]]:
    """The task set's conversations of each of `splits` (`londinium tasks build` makes them), each
    task's file read once: the named tasks, "default" standing for the default mix (["default",
    "tool_search"]: the mix and one more)."""
    if not tasks:
        return {split: [] for split in splits}
    try:
        from londinium.tasks.messages import split_conversations
    except ImportError:
        raise DataError("this londinium has no task set to train on (londinium.tasks.messages.split_conversations); "
                        "train on your own data with --data FILE and no --tasks") from None
    rows = split_conversations(ws, splits, task_names(ws, tasks))
    return {split: [Conversation(tuple(_message(m, f"task item {row['id']}", f"messages[{i}]") for i, m in enumerate(row["messages"])),
                                 f"task item {row['id']}", row["task"], tuple(row.get("tools") or ()))
                    for row in rows[split]]
            for split in splits}


def task_files(ws: Workspace, tasks: Sequence[str]) -> list[Path]:
    """The item files of the tasks trained on: a rebuilt task set makes the run out of date."""
    return [ws.task_items(name) for name in task_names(ws, tasks)]


def task_names(ws: Workspace, tasks: Sequence[str]) -> list[str]:
    """`tasks` with "default" replaced by the corpus's default mix, each name once, in order."""
    from londinium.tasks.messages import default_tasks

    names: list[str] = []
    for name in tasks:
        names += [n for n in (default_tasks(ws) if name == "default" else [name]) if n not in names]
    return names


def held_out(conversations: Sequence[Conversation], share: float) -> tuple[list[Conversation], list[Conversation]]:
    """(train, val) of a user's conversations: the `share` (at least one, when there are two or
    more) whose sha256 sorts first is held out. By content, not by position: adding lines to a file
    moves no other line across the split."""
    if share <= 0 or len(conversations) < 2:
        return list(conversations), []
    k = max(1, round(share * len(conversations)))
    ranked = sorted(range(len(conversations)), key=lambda i: conversations[i].digest())
    val = set(ranked[:k])
    return ([c for i, c in enumerate(conversations) if i not in val], [c for i, c in enumerate(conversations) if i in val])


# ---- tokens ----------------------------------------------------------------------------------------


def tokenize(conversations: Iterable[Conversation], tokenizer: Any, context: int) -> tuple[list[Example], list[Conversation]]:
    """(examples, too_long): each conversation through the chat template (`tokenize_chat`), with
    its assistant mask. A conversation of more than `context + 1` tokens cannot be one training
    sequence: it is returned in `too_long` for the caller to refuse or skip."""
    from londinium.infer.chat_template import tokenize_chat

    examples, too_long = [], []
    for c in conversations:
        chat = tokenize_chat(tokenizer, list(c.messages), add_generation_prompt=False, tools=c.tools or None)
        if len(chat.ids) > context + 1:
            too_long.append(c)
            continue
        examples.append(Example(np.asarray(chat.ids, dtype=np.int64), np.asarray(chat.assistant_mask, dtype=bool), c.where, c.task))
    return examples, too_long


def too_long_error(c: Conversation, tokenizer: Any, context: int) -> DataError:
    from londinium.infer.chat_template import tokenize_chat

    n = len(tokenize_chat(tokenizer, list(c.messages), add_generation_prompt=False, tools=c.tools or None).ids)
    return DataError(f"{c.where}: the conversation is {n:,} tokens through the chat template; the model reads at most "
                     f"{context + 1:,} (model.context + 1): shorten it or split it into several lines")


def data_sha256(examples: Sequence[Example]) -> str:
    """One hash of the tokenised data (ids and masks, in order): a run's fingerprint holds it."""
    h = hashlib.sha256()
    for e in examples:
        h.update(np.int64(len(e)).tobytes())
        h.update(e.ids.tobytes())
        h.update(np.packbits(e.mask).tobytes())
    return h.hexdigest()
