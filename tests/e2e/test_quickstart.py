"""`londinium quickstart` end to end on a small local corpus: every stage runs for real (seconds of
training), every artifact exists, the report card agrees with results.json, and a second run skips
every finished stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.prose import prose

from londinium.cli import main as cli_main

# The whole pipeline, twice over (a base model and its fine-tuned assistant): ~25 s on a quiet
# machine, minutes on a loaded one.
pytestmark = pytest.mark.timeout(900)

def _registry(tmp_path: Path) -> Path:
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(60):
        (texts / f"work{i:02d}.txt").write_text(f"WORK {i}\n\n" + prose(i, 24), encoding="utf-8")
    registry = tmp_path / "sources.toml"
    registry.write_text('[[source]]\nid = "works"\nkind = "local"\nlocation = "texts"\nperiod = [1600, 1640]\n'
                        'license = "Public domain"\ntitle = "Works"\n', encoding="utf-8")
    return registry


SETTINGS = [
    "tokenizer.vocab_size=384", "tokenizer.compare_gpt2=false", "tokenizer.compare_sources=false",
    "train.max_steps=12", "train.eval_every=6", "train.eval_batches=2", "train.batch_size=4", "train.warmup_steps=2",
    "train.peak_tflops=0.1",
    "model.context=64", "eval.max_docs=4", "eval.prompts=2", "eval.prompt_chars=80", "eval.reference_words=8",
    "eval.max_new_tokens=8", "eval.temperatures=[0.0, 1.0]", "corpus.val_fraction=0.1", "corpus.test_fraction=0.1",
    "tasks.train_items=40", "tasks.eval_items=6", "tasks.max_tokens=8", "tasks.passage_words=6",
    "sft.max_steps=4", "sft.eval_every=2", "sft.warmup_steps=1", "sft.val_conversations=12",
]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("quick")
    registry = _registry(tmp_path)
    args = ["quickstart", "-w", str(tmp_path / "ws"), "--set", f"corpus.sources={json.dumps(str(registry))}",
            "--set", f"corpus.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    for s in SETTINGS:
        args += ["--set", s]
    return tmp_path / "ws", args


def test_quickstart_builds_every_artifact_and_the_report_agrees_with_results(quick, capsys):
    ws_root, args = quick
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    for path in ("corpus/report.md", "corpus/train.jsonl", "tokenizer/tokenizer.json", "tokenizer/report.md",
                 "shards/train.bin", "runs/main/metrics.jsonl", "eval/main/results.json", "eval/main/report.md",
                 "eval/main/loss.png", "index/meta.json"):
        assert (ws_root / path).is_file(), path
    assert any((ws_root / "eval/main").glob("*bpb*.png")) or len(list((ws_root / "eval/main").glob("*.png"))) >= 2

    results = json.loads((ws_root / "eval/main/results.json").read_text(encoding="utf-8"))
    report = (ws_root / "eval/main/report.md").read_text(encoding="utf-8")
    val_bpb = results["perplexity"]["val"]["total"]["bits_per_byte"]
    assert 0 < val_bpb < 12
    assert f"{val_bpb:.3f}" in report
    # a user's registry: the neutral profile, so the cloze set cut from its own held-out text, and no period probes
    assert "probes" not in results and results["profile"] == "neutral"
    cloze = results["cloze"]["summary"]["overall"]
    assert cloze["n"] > 0 and f"{100 * cloze['accuracy']:.1f}% ± {100 * cloze['accuracy_se']:.1f}" in report
    samples = results["generation"]["samples"]
    assert len(samples) == 2 * (1 + 2)  # 2 prompts: one greedy, two samples at temperature 1
    # The end of quickstart says what the model reached and where the cards are.
    assert f"{val_bpb:.3f} bits per byte" in out
    assert "cloze:" in out and "chance" in out and "samples" in out
    assert "a cloze item asks which of a few words of the corpus comes next" in out  # what the figure means
    assert str(ws_root / "corpus/report.md") in out and str(ws_root / "eval/main/report.md") in out
    # Then the base is fine-tuned on the task set into an assistant, whose report card has the task table...
    assert (ws_root / "tasks/card.md").is_file() and (ws_root / "runs/main-sft/metrics.jsonl").is_file()
    answers = json.loads((ws_root / "eval/main-sft/results.json").read_text(encoding="utf-8"))
    tasks = answers["tasks"]["tasks"]
    assert answers["tasks"]["shots"] == 0 and {"next_word", "title"} <= set(tasks)  # generic tasks: any corpus
    assert all(tasks[t]["splits"]["test"]["summary"]["n"] > 0 for t in ("next_word", "title"))
    assert "## Tasks" in (ws_root / "eval/main-sft/report.md").read_text(encoding="utf-8")
    sft_bpb = answers["perplexity"]["val"]["total"]["bits_per_byte"]
    assert f"val: {sft_bpb:.3f} bits per byte on plain text ({sft_bpb - val_bpb:+.3f} against the base model)" in out
    assert "held-out test tasks, zero-shot (baseline): " in out and "answers in the trained format" in out
    assert "londinium chat --run main-sft" in out
    # ... and it ends with the assistant's export, which transformers loads and answers through its chat template.
    [export] = (ws_root / "exports").glob("main-sft-step-*/")
    assert str(export) in out and "AutoModelForCausalLM.from_pretrained(" in out
    record = json.loads((export / "londinium.json").read_text(encoding="utf-8"))
    assert record["objective"]["name"] == "sft" and record["objective"]["base"]["run"] == "main"
    assert record["objective"]["base"]["step"] == 12 and record["objective"]["tasks"] == ["default"]
    assert "supervised fine-tuning of `main` step 12" in (export / "README.md").read_text(encoding="utf-8")
    import transformers

    tok, model = transformers.AutoTokenizer.from_pretrained(export), transformers.AutoModelForCausalLM.from_pretrained(export)
    ids = tok.apply_chat_template([{"role": "user", "content": "Thou art"}], add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    assert tok.decode(ids["input_ids"][0]).rstrip().endswith("<|assistant|>")  # the template's prompt, not the bare text
    assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] <= ids["input_ids"].shape[1] + 4


def test_quickstart_again_skips_every_finished_stage(quick, capsys):
    ws_root, args = quick
    if not (ws_root / "eval/main/results.json").is_file():
        assert cli_main(args) == 0
    before = (ws_root / "eval/main/results.json").read_bytes()
    capsys.readouterr()
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert out.count("up to date") >= 4, out
    assert (ws_root / "eval/main/results.json").read_bytes() == before


def test_minutes_are_a_time_budget_for_any_preset_and_bad_values_are_refused():
    """--minutes sets train.max_minutes and sft.max_minutes, split by SFT_SHARE, and nothing else: the
    trainer plans the steps from the pace it measures (tests/integration/test_train_budget.py); the
    preset's steps stay as they are."""
    from londinium.config import load_config
    from londinium.errors import ConfigError
    from londinium.pipeline import SFT_SHARE, set_training_budget

    for preset in ("tiny", "small"):
        cfg, before = load_config(preset=preset), load_config(preset=preset)
        set_training_budget(cfg, 30)
        assert cfg.train.max_minutes + cfg.sft.max_minutes == pytest.approx(30)
        assert cfg.sft.max_minutes == pytest.approx(30 * SFT_SHARE) and 0 < SFT_SHARE < 0.5
        cfg.train.max_minutes, cfg.sft.max_minutes = before.train.max_minutes, before.sft.max_minutes
        assert cfg == before
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--minutes"):
            set_training_budget(load_config(preset="tiny"), bad)


def test_the_resume_command_ctrl_c_prints_works_on_a_quickstart_workspace(quick, tmp_path, capsys):
    """The hint an interrupted quickstart prints names no preset or --set: it must still continue the
    run as quickstart trained it (tiny preset, context 64), not the defaults' 6-layer model."""
    import shutil

    from londinium.train.trainer import resume_command
    from londinium.workspace import Workspace

    ws_root, args = quick
    if not (ws_root / "runs/main/metrics.jsonl").is_file():
        assert cli_main(args) == 0
    copy = Workspace(shutil.copytree(ws_root, tmp_path / "ws"))  # the training below must not change the shared one
    hint = resume_command(copy, "main").split()
    assert hint[:2] == ["londinium", "train"] and "--preset" not in hint and "--set" not in hint
    capsys.readouterr()
    assert cli_main(hint[1:]) == 0, capsys.readouterr().err
    assert "run 'main' is up to date" in capsys.readouterr().out  # same config as trained: nothing to do
    assert cli_main([*hint[1:], "--set", "train.max_steps=14"]) == 0  # changed on purpose: train longer
    out = capsys.readouterr().out
    assert "resuming from step 12" in out and "train.max_steps changed since the checkpoint" in out
    assert "max steps reached at step 14" in out
