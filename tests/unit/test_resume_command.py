"""The command a refusal or a hint names to continue a run is the one that made it (its saved config's
train.objective), whichever command the user ran when told."""

import pytest

from londinium.train.resume import resume_command
from londinium.workspace import Workspace


@pytest.mark.parametrize(("objective", "command"), [
    ("next-token", "londinium train --resume --run r"),
    ("sft", "londinium sft --resume --name r"),
    ("distill", "londinium distill --resume --name r"),
    ("grpo", "londinium rl --resume --name r"),
])
def test_the_command_is_the_stage_that_made_the_run(tmp_path, objective, command):
    ws = Workspace(tmp_path / "ws")
    ws.run_config_file("r").parent.mkdir(parents=True)
    ws.run_config_file("r").write_text(f'[train]\nobjective = "{objective}"\n', encoding="utf-8")
    assert resume_command(ws, "r") == f"{command} -w {ws.root}"
    assert resume_command(ws, "r", world_size=2).startswith("torchrun --nproc_per_node=2 -m londinium ")


def test_a_run_without_a_readable_config_is_continued_by_train(tmp_path):
    ws = Workspace(tmp_path / "ws")
    assert resume_command(ws, "r") == f"londinium train --resume --run r -w {ws.root}"
    ws.run_config_file("r").parent.mkdir(parents=True)
    ws.run_config_file("r").write_text("[train\n", encoding="utf-8")  # not TOML
    assert resume_command(ws, "r", world_size=2) == f"torchrun --nproc_per_node=2 -m londinium train --resume --run-name r -w {ws.root}"
