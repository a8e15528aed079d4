"""Shared piece of the retrieval tests: a copy of the tiny workspace with its search index and vector index."""

from __future__ import annotations

import shutil

from londinium.config import load_config
from londinium.index.build import build_index
from londinium.retrieve.vectors import build_vectors
from londinium.workspace import Workspace

# Hybrid, so that both indexes, fusion and the corpus embedder are exercised (the default mode is bm25).
OVERRIDES = ["retrieve.mode=hybrid", "retrieve.dim=32"]
_built: dict[str, Workspace] = {}


def rag_workspace(tiny_workspace: Workspace, tmp_path_factory) -> Workspace:
    """Built once per session: the tiny corpus, its BM25 index and its vector index (a 32-dimension corpus embedder)."""
    if "ws" not in _built:
        ws = Workspace(tmp_path_factory.mktemp("rag") / "ws")
        shutil.copytree(tiny_workspace.root, ws.root)
        cfg = load_config(overrides=OVERRIDES)
        build_index(ws, cfg, log=lambda m: None, show_progress=False)
        build_vectors(ws, cfg, log=lambda m: None)
        _built["ws"] = ws
    return _built["ws"]
