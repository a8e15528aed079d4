"""Shared fixtures. Keep each one clearly named after what it provides."""

from __future__ import annotations

import random

import pytest
import torch

from londinium.workspace import Workspace

# ---- tiny_workspace: corpus -> tokenizer -> shards through the real stages, for training tests -----

_WORDS = ("thou thee thy hath doth art shalt wilt lord king queen heaven earth night day light love death "
          "sword crown blood grace mercy honour shame sweet fair foul noble gentle good evil man woman child "
          "father mother son brother house land sea fire water wind say speak know see hear come go give "
          "take make keep stand fall rise live die and the of to in that with for not but upon unto").split()


def _tiny_corpus_rows(n_docs: int, seed: int) -> list[dict]:
    """Deterministic period-flavoured prose: enough structure (fixed phrases, punctuation) for a
    2-layer model's loss to fall within a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_docs):
        sentences = []
        for _ in range(rng.randint(4, 9)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 12))]
            sentences.append(" ".join(words).capitalize() + rng.choice([".", ";", "!", "?"]))
            if rng.random() < 0.3:
                sentences.append("Thus saith the Lord.")
        rows.append({"id": f"tiny/{seed}-{i}", "text": " ".join(sentences), "source": "tiny", "group": f"tiny-{seed}-{i}"})
    return rows


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory) -> Workspace:
    """A workspace with a ~40 KB corpus, a 512-token BPE tokenizer and train/val/test shards.

    Built once per session through the real tokenizer and shard stages; tests that train put their
    runs under distinct `--run` names and must not modify the shards.
    """
    from londinium.config import DataConfig, TokenizerConfig
    from londinium.data.shards import prepare_shards
    from londinium.files import write_jsonl
    from londinium.tokenizer.train import train_tokenizer

    ws = Workspace(tmp_path_factory.mktemp("tiny") / "ws")
    for split, n, seed in (("train", 120, 1), ("val", 16, 2), ("test", 8, 3)):
        write_jsonl(ws.corpus_split(split), _tiny_corpus_rows(n, seed))
    ws.adopt("corpus", [ws.corpus_split(s) for s in ("train", "val", "test")])  # later stages trust only recorded outputs
    quiet = dict(log=lambda m: None)
    train_tokenizer(ws, TokenizerConfig(vocab_size=512, compare_gpt2=False, compare_sources=False), **quiet)
    prepare_shards(ws, DataConfig(), **quiet)
    return ws


@pytest.fixture
def one_thread():
    """torch on one thread for the test: tiny models are all per-op overhead, so one thread runs
    them faster than two (with two, every op waits on a thread a busy machine has descheduled)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
