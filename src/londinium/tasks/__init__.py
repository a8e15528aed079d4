"""Tasks cut from the corpus: items with an answer a program can check, and where they came from.

    from londinium.tasks import conversations, check, instruction
    conversations(ws, "train")                 # {"id", "task", "messages"} of the default task mix
    check("speaker", "KING HENRY", item)       # 1.0: the checker of each task (accuracy, exact match, chrF)
    instruction(item, shots)                   # the messages asking `item`, its answer left out
    from londinium.tasks.build import build_tasks, build_cloze
    from londinium.tasks.items import read_items     # TaskItem rows of any task file

Modules, one job each: `items` (the one item shape and its JSONL, checked line by line), `cut`
(what cutters share), `cloze` (multiple-choice cloze items, distractors matched to the answer),
`generic` (next word and line, source, period, title: any corpus), `period` and `modernize` (the
period-london profile's tasks), `catalog` (every task: cutter, metric, baseline), `prompts` (how
each task is asked), `messages` (items as conversations), `check` (scoring answers), `card` (data
cards), `build` (each task as a recorded stage, `tasks/<task>/`). The evaluation scores the cloze
set as its default instrument and, with `--tasks`, the task set by generation; supervised
fine-tuning trains on the task set's train items (val/test items come only from val/test
documents, so none was seen in pre-training). A new task is a cutter, an `ask_` function and a
`Task` entry in `catalog`.
"""

from londinium.tasks.check import check
from londinium.tasks.messages import conversations, instruction, messages

__all__ = ["check", "conversations", "instruction", "messages"]
