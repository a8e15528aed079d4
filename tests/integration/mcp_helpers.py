"""Shared pieces of the MCP tests: one workspace with a trained run, its search index, report card and
model card (built once per session, whichever module asks first), and the server's command line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from londinium.config import load_config
from londinium.eval.run import evaluate
from londinium.files import read_jsonl, write_jsonl
from londinium.index.build import build_index
from londinium.workspace import Workspace

from tests.integration.train_helpers import cli_in_process, train_args

RUN = "mcp"
PASSAGE = "Thus saith the Lord. The king and the queen hath gone to the sea, and the night is fair."
# A document whose id holds what a URI must encode ('%', '/', '#', '?', ' ', '..') and what it may
# not decode twice ('%2F' and '%25' as text): its resource URI must lead back to it.
ODD_ID = "tiny/100% of 50%2F #1?x=%25/../é"
ODD_TEXT = "Zounds! Parchment percent quoth Yorick."
_built: dict[str, Workspace] = {}


def mcp_workspace(tiny_workspace: Workspace, tmp_path_factory) -> Workspace:
    """A copy of the tiny workspace with a trained run, the ODD_ID document added to its val split,
    its search index, its report card (which also scored PASSAGE as a --text file, for the
    equivalence check) and an export's model card."""
    if "ws" in _built:
        return _built["ws"]
    ws = Workspace(tmp_path_factory.mktemp("mcp") / "ws")
    shutil.copytree(tiny_workspace.root, ws.root)
    rc, _, err = cli_in_process(train_args(ws, RUN, 6))
    assert rc == 0, err
    val = [*read_jsonl(ws.corpus_split("val")), {"id": ODD_ID, "text": ODD_TEXT, "source": "tiny", "group": "odd"}]
    write_jsonl(ws.corpus_split("val"), val)
    # the edited corpus, recorded anew; its period-flavoured text has the default corpus's profile (the period wording)
    ws.adopt("corpus", [ws.corpus_split(s) for s in ("train", "val", "test")], {"profile": "period-london"})
    index_and_report_card(ws, RUN)
    card = ws.exports_dir / f"{RUN}-step-000006" / "README.md"
    card.parent.mkdir(parents=True)
    card.write_text("# Model card\n\nA tiny test model.\n", encoding="utf-8")
    _built["ws"] = ws
    return ws


def index_and_report_card(ws: Workspace, run: str) -> None:
    """Build `ws`'s search index and `run`'s report card (a quick one: two val documents, no probes
    or samples), which also scores PASSAGE as a --text file, for equivalence checks."""
    quiet = lambda m: None  # noqa: E731
    cfg = load_config(overrides=["eval.splits=['val']", "eval.max_docs=2", "eval.probes=false", "eval.prompts=0"])
    build_index(ws, cfg, log=quiet, show_progress=False)
    text_file = ws.root / "passage.txt"
    text_file.write_text(PASSAGE, encoding="utf-8")
    evaluate(ws, cfg, run=run, texts=[text_file], log=quiet, show_progress=False)


def server_env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    # One thread, as in this process: the equality with eval is exact only with the same kernels.
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
            "LONDINIUM_API_KEY": ""}


def server_args(ws: Workspace, *extra: str) -> list[str]:
    return ["-m", "londinium", "mcp", "-w", str(ws.root), "--run", RUN, "--checkpoint", "latest", *extra]


def text_of(result) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(proc: subprocess.Popen, port: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"londinium mcp --http exited with {proc.returncode}: {proc.stderr.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"londinium mcp --http did not listen on port {port} within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
