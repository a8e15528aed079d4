"""Checkpoint IO: atomic, complete, verified, pruned, and never an arbitrary unpickle.

A small module with a tied embedding/head stands in for the GPT here: the checkpoint code is generic
over modules, and the tie is the case safetensors is strict about.
"""

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from londinium import checkpoint as ck


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(11, 8)
        self.mid = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 11, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, x):
        return self.head(torch.tanh(self.mid(self.wte(x))))


def trained_pair(seed=0):
    torch.manual_seed(seed)
    m = Tied()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(3):
        x = torch.randint(0, 11, (4, 5))
        loss = torch.nn.functional.cross_entropy(m(x).view(-1, 11), x.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return m, opt


def save(directory: Path, step: int, m=None, opt=None, **state):
    m, opt = (m, opt) if m is not None else trained_pair(step)
    st = {"optimizer": opt.state_dict(), "step": step, "rng": [ck.capture_rng()], **state}
    return ck.save_checkpoint(directory, step, m, st, 'preset = ""\n', {"tokenizer_sha256": "abc", "world_size": 1})


def test_round_trip_restores_weights_optimizer_and_ties(tmp_path):
    m, opt = trained_pair()
    c = save(tmp_path, 7, m, opt)
    assert c.path.name == "step-000007" and not list(tmp_path.glob("*.tmp"))
    fresh = Tied()
    ck.load_weights(fresh, ck.verify(c.path))
    for (name, a), b in zip(m.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert fresh.head.weight.data_ptr() == fresh.wte.weight.data_ptr()  # still one matrix
    state = ck.load_trainer_state(c)
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    opt2.load_state_dict(state["optimizer"])
    for s1, s2 in zip(opt.state.values(), opt2.state.values()):
        assert torch.equal(s1["exp_avg_sq"], s2["exp_avg_sq"])
    assert state["step"] == 7


def test_restored_rngs_draw_the_same_numbers(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    c = save(tmp_path, 1)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ck.restore_rng(ck.load_trainer_state(c)["rng"][0])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_truncated_newest_checkpoint_is_named_and_skipped_for_the_previous(tmp_path):
    save(tmp_path, 4)
    bad = save(tmp_path, 8)
    f = bad.path / ck.MODEL_FILE
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    messages = []
    got = ck.latest_valid(tmp_path, log=messages.append)
    assert got.step == 4
    assert "step-000008" in messages[0] and "truncated" in messages[0]
    assert (tmp_path / "step-000008.damaged").is_dir()  # kept for inspection, out of the run's way


def test_flipped_byte_is_caught_by_the_hash(tmp_path):
    save(tmp_path, 4)
    bad = save(tmp_path, 8)
    f = bad.path / ck.STATE_FILE
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    messages = []
    assert ck.latest_valid(tmp_path, log=messages.append).step == 4
    assert "corrupted" in messages[0] and ck.STATE_FILE in messages[0]


def test_a_save_cut_short_is_not_a_checkpoint(tmp_path):
    save(tmp_path, 4)
    (tmp_path / "step-000008.tmp").mkdir()  # killed while writing
    (tmp_path / "step-000008.tmp" / ck.MODEL_FILE).write_bytes(b"partial")
    half = save(tmp_path, 12)
    (half.path / ck.META_FILE).unlink()  # marker missing: as if killed before it was written
    assert [c.step for c in ck.list_checkpoints(tmp_path)] == [4]
    assert ck.latest_valid(tmp_path, log=lambda m: None).step == 4


def test_no_checkpoint_at_all_gives_none(tmp_path):
    assert ck.latest_valid(tmp_path / "nothing-here") is None


def test_trainer_state_with_a_pickled_object_is_refused(tmp_path):
    c = save(tmp_path, 3)
    # A state file that would run code when unpickled (os.getcwd stands in for something worse),
    # with the hashes in meta.json updated so that only the safe loader stands in the way.
    torch.save({"fn": os.getcwd, "module": Tied()}, c.path / ck.STATE_FILE)
    meta = json.loads((c.path / ck.META_FILE).read_text())
    from londinium.files import sha256_file

    f = c.path / ck.STATE_FILE
    meta["files"][ck.STATE_FILE] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    (c.path / ck.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ck.CheckpointError, match="cannot be read safely"):
        ck.load_trainer_state(ck.verify(c.path))


def test_weights_of_another_architecture_are_refused_by_name(tmp_path):
    c = save(tmp_path, 3)
    other = torch.nn.Sequential(torch.nn.Linear(8, 8))
    with pytest.raises(ck.CheckpointError, match="do(es)? not fit"):
        ck.load_weights(other, c)


def test_prune_keeps_the_last_n_and_the_best(tmp_path):
    for step, val in [(2, 3.0), (4, 1.5), (6, 2.0), (8, 2.5), (10, 2.2)]:
        ck.write_eval(save(tmp_path, step), {"val_loss": val})
    (tmp_path / "step-000012.tmp").mkdir()
    ck.prune(tmp_path, keep_last=2)
    assert [c.step for c in ck.list_checkpoints(tmp_path)] == [4, 8, 10]
    assert ck.best_checkpoint(tmp_path).step == 4
    assert not (tmp_path / "step-000012.tmp").exists()


def test_saving_a_step_that_exists_keeps_the_complete_one(tmp_path):
    first = save(tmp_path, 5)
    before = (first.path / ck.META_FILE).read_text()
    again = save(tmp_path, 5)
    assert (again.path / ck.META_FILE).read_text() == before
