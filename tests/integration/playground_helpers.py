"""Shared pieces of the playground tests: one workspace with two trained runs, the search index, a
report card and a real export's model card (built once per session, whichever module asks first)."""

from __future__ import annotations

import shutil

from serve_helpers import EXTRA
from train_helpers import cli_in_process, train_args

from londinium.config import load_config
from londinium.eval.run import evaluate
from londinium.export.run import export_run
from londinium.index.build import build_index
from londinium.workspace import Workspace

RUN, OTHER = "play", "play-b"  # the page's model, and the one Compare puts beside it
PASSAGE = "Thus saith the Lord. The king and the queen hath gone to the sea, and the night is fair."
_built: dict[str, Workspace] = {}


def playground_workspace(tiny_workspace: Workspace, tmp_path_factory) -> Workspace:
    """A copy of the tiny workspace with RUN (20 steps, context 128: room for a chat) and OTHER
    (6 steps), the index, RUN's report card (which also scored PASSAGE as a --text file) and export."""
    if "ws" in _built:
        return _built["ws"]
    ws = Workspace(tmp_path_factory.mktemp("playground") / "ws")
    shutil.copytree(tiny_workspace.root, ws.root)
    for run, steps in ((RUN, 20), (OTHER, 6)):
        rc, _, err = cli_in_process(train_args(ws, run, steps, *EXTRA))
        assert rc == 0, err
    quiet = lambda m: None  # noqa: E731
    cfg = load_config(overrides=["eval.splits=['val']", "eval.max_docs=2", "eval.probes=false", "eval.prompts=0"])
    build_index(ws, cfg, log=quiet, show_progress=False)
    text_file = ws.root / "passage.txt"
    text_file.write_text(PASSAGE, encoding="utf-8")
    evaluate(ws, cfg, run=RUN, texts=[text_file], log=quiet, show_progress=False)
    export_run(ws, cfg, run=RUN, checkpoint="latest", log=quiet)
    _built["ws"] = ws
    return ws
