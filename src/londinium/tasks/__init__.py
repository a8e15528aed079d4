"""Tasks cut from the corpus: items with an answer a program can check, and where they came from.

    from londinium.tasks.build import build_cloze    # build_cloze(ws, ClozeSpec()) -> tasks/cloze/items.jsonl
    from londinium.tasks.items import read_items     # TaskItem rows of any task file

Modules, one job each: `items` (the one item shape and its JSONL, checked line by line), `cloze`
(multiple-choice cloze items from held-out documents, distractors matched to the answer), `build`
(each task as a recorded stage, `tasks/<task>/`). The evaluation scores the cloze set as its
default instrument; supervised fine-tuning can train on the same items (val/test items come only
from val/test documents, so none was seen in pre-training). A new task is a module that turns
corpus documents into `TaskItem`s, and a `build_<task>` stage beside `build_cloze`.
"""
