"""Shared pieces of the playground tests: one workspace with two trained runs, the search index, a
report card and a real export's model card (built once per session, whichever module asks first)."""

from __future__ import annotations

import shutil

from serve_helpers import EXTRA
from train_helpers import cli_in_process, train_args

from londinium.config import load_config
from londinium.export.run import export_run
from londinium.workspace import Workspace

from tests.integration.mcp_helpers import PASSAGE, index_and_report_card  # noqa: F401 - PASSAGE: the text its report card scored

RUN, OTHER = "play", "play-b"  # the page's model, and the one Compare puts beside it
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
    index_and_report_card(ws, RUN)
    export_run(ws, load_config(), run=RUN, checkpoint="latest", log=lambda m: None)
    _built["ws"] = ws
    return ws
