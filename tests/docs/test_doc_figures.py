"""Figures the docs quote that the code recomputes in milliseconds are checked against the code, so
a change to a preset or to the probe set cannot leave a stale number behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from londinium.config import PRESETS, ModelConfig
from londinium.eval.probes import load_probes
from londinium.model.info import param_counts

ROOT = Path(__file__).resolve().parents[2]


def _millions(n: int) -> float:
    return round(n / 1e6, 1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_model_guide_preset_table_quotes_the_real_parameter_counts(preset):
    row = next(line for line in (ROOT / "docs" / "model.md").read_text().splitlines() if line.startswith(f"| `{preset}` |"))
    quoted = re.search(r"\| ([\d.]+)M \(([\d,]+)\) \|", row)
    assert quoted, f"docs/model.md: the {preset} row has no 'params (vocab)' cell: {row}"
    millions, vocab = float(quoted[1]), int(quoted[2].replace(",", ""))
    assert vocab == PRESETS[preset]["tokenizer"]["vocab_size"]
    cfg = ModelConfig(**PRESETS[preset]["model"], vocab_size=vocab)
    assert round(millions, 1) == _millions(param_counts(cfg).total), f"docs/model.md: {preset} parameters"


def test_readme_quotes_the_tiny_presets_size():
    cfg = ModelConfig(**PRESETS["tiny"]["model"], vocab_size=PRESETS["tiny"]["tokenizer"]["vocab_size"])
    quoted = re.search(r"`tiny` preset \(([\d.]+) M parameters\)", (ROOT / "README.md").read_text())
    assert quoted and float(quoted[1]) == round(param_counts(cfg).total / 1e6, 1)


def test_evaluation_guide_quotes_the_size_of_the_default_probe_set():
    quoted = re.search(r"period_london\.toml`, (\d+) probes\)", (ROOT / "docs" / "evaluation.md").read_text())
    assert quoted and int(quoted[1]) == len(load_probes().probes)


def test_training_guide_quotes_the_tiny_presets_steps_and_warmup():
    text = " ".join((ROOT / "docs" / "training.md").read_text().split())
    train = PRESETS["tiny"]["train"]
    fixed = re.search(r"trains the tiny preset's fixed ([\d,]+) steps", text)
    assert fixed and int(fixed[1].replace(",", "")) == train["max_steps"]
    share = re.search(r"the tiny preset's ([\d,]+) of ([\d,]+) become (\d+) of a (\d+)-step plan", text)
    assert share and (int(share[1].replace(",", "")), int(share[2].replace(",", ""))) == (train["warmup_steps"], train["max_steps"])
    assert int(share[3]) == round(train["warmup_steps"] * int(share[4]) / train["max_steps"])
