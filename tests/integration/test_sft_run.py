"""`londinium sft` end to end on the tiny workspace: a base run fine-tuned on a user's conversations
is recorded as an SFT run, bad data is one named line, and its greedy answers to held-out prompts
are the same through every path: the engine, `londinium chat`, the server's /v1/chat/completions
(official openai client) and the HF export in transformers (apply_chat_template + generate)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tomllib

import openai
import pytest
from serve_helpers import live_server
from train_helpers import cli_in_process, sft_args, train_args, write_conversations

from londinium.config import Config, GenerateConfig, ServeConfig
from londinium.infer.chat_template import END_OF_TURN, tokenize_chat
from londinium.infer.engine import Engine
from londinium.infer.sampling import SamplingParams
from londinium.model.load import load_run
from londinium.train.monitor import read_metrics
from londinium.train.sft_data import held_out, read_conversations
from londinium.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")
BASE, SFT = "sft-base", "sft-chat"
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def runs(tiny_workspace, tmp_path_factory):
    """A base run (context 64) and its SFT run on the helpers' conversations; (ws, data file)."""
    ws = tiny_workspace
    rc, _, err = cli_in_process(train_args(ws, BASE, 12, "--set", "model.context=64"))
    assert rc == 0, err
    # Every answer starts with a phrase the corpus repeats: a few steps teach it, so the greedy
    # answers compared below are words, not an empty turn.
    data = write_conversations(ws, tmp_path_factory.mktemp("sft") / "chats.jsonl", answer_prefix="Thus saith the Lord: ")
    rc, out, err = cli_in_process(sft_args(ws, BASE, SFT, 18, data, "--set", "sft.val_share=0.1"))
    assert rc == 0, err
    return ws, data


def test_the_run_records_its_objective_base_and_both_validations(runs):
    ws, data = runs
    saved = tomllib.loads(ws.run_config_file(SFT).read_text())
    assert saved["train"]["objective"] == "sft" and saved["sft"]["base"] == BASE and saved["sft"]["data"] == [str(data)]
    assert saved["model"]["context"] == 64  # the base's architecture, though this command set none
    assert saved["train"]["max_steps"] == saved["sft"]["max_steps"] == 18
    evals = [r for r in read_metrics(ws.metrics_file(SFT)) if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [6, 12, 18]
    assert all(r["val_tokens"] > 0 and r["text_val_bpb"] > 0 for r in evals)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]  # the held-out answers' loss fell


@pytest.mark.parametrize("line, named", [
    ('{"messages": [{"role": "user", "content": "hi"}]}', "line 2: the last message is the user's"),
    ('{"prompt": "hi", "completion": 3}', "line 2: field 'completion' must be a non-empty list"),
    ('{"messages": [{"role": "user", "content": "' + "thou " * 80 + '"}, {"role": "assistant", "content": "x"}]}',
     "line 2: the conversation is"),
])
def test_bad_data_is_one_named_line_and_exit_2(runs, tmp_path, line, named):
    ws, _ = runs
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n' + line + "\n")
    rc, _, err = cli_in_process(sft_args(ws, BASE, "sft-bad", 4, bad))
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and f"{bad}: {named}" in err
    assert not ws.run_dir("sft-bad").exists() or not any(ws.checkpoints_dir("sft-bad").glob("step-*"))


def test_an_unknown_base_is_refused_with_the_runs_there_are(runs, tmp_path):
    ws, data = runs
    rc, _, err = cli_in_process(sft_args(ws, "nosuch", "sft-none", 4, data))
    assert rc == 2 and "unknown run 'nosuch'" in err and BASE in err


def test_greedy_answers_agree_through_engine_chat_server_and_transformers(runs, tmp_path):
    import transformers

    from londinium.export.run import export_run

    ws, data = runs
    prompts = [c.messages[:-1] for c in held_out(read_conversations(data), 0.1)[1]]
    assert len(prompts) >= 4
    trained = load_run(ws, run=SFT, checkpoint="latest")
    engine = Engine.from_trained(trained)
    end = engine.tokenizer.token_to_id(END_OF_TURN)
    params = SamplingParams.from_config(GenerateConfig(), max_tokens=MAX_TOKENS, temperature=0.0, stop_token_ids=[end])
    want = [engine.generate([tokenize_chat(engine.tokenizer, list(m)).ids], params)[0].text for m in prompts]
    assert sum(len(t.split()) >= 2 for t in want) >= len(want) // 2, want  # answers, not empty turns

    # The server, through the official client.
    with live_server(create_app_for(trained)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        served = [client.chat.completions.create(model="tiny", messages=list(m), max_tokens=MAX_TOKENS, temperature=0)
                  .choices[0].message.content for m in prompts]
    assert served == want

    # The HF export, in transformers.
    path = export_run(ws, Config(), run=SFT, checkpoint="latest", out=tmp_path / "hf", log=lambda m: None)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    for messages, text in zip(prompts, want):
        ids = tok.apply_chat_template(list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = hf.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=end, pad_token_id=end)
        assert tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True) == text

    # `londinium chat`, the real CLI: single-turn lines (/reset between), greedy.
    lines = "".join(f"{m[-1]['content']}\n/reset\n" for m in prompts if len(m) == 1)
    chat = subprocess.run([sys.executable, "-m", "londinium", "chat", "-w", str(ws.root), "--run", SFT, "--checkpoint", "latest",
                           "--greedy", "--max-tokens", str(MAX_TOKENS)], input=lines, capture_output=True, text=True, timeout=120)
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert "fine-tuned assistant" in chat.stdout
    replies = [line for line in chat.stdout.splitlines()[1:] if line != "(conversation reset)"]
    assert replies == [t for m, t in zip(prompts, want) if len(m) == 1]


def create_app_for(trained):
    from londinium.serve.app import create_app

    return create_app(lambda: Engine.from_trained(trained), "tiny", ServeConfig(), GenerateConfig())


def test_chat_on_a_base_run_says_it_continues_text(runs, monkeypatch):
    ws, _ = runs
    monkeypatch.setattr(sys, "stdin", io.StringIO("Thou art\n"))  # in this process: the subprocess case is above
    rc, out, err = cli_in_process(["chat", "-w", str(ws.root), "--run", BASE, "--checkpoint", "latest", "--greedy", "--max-tokens", "4"])
    assert rc == 0, err
    assert "base model continues your text" in out.splitlines()[0] and len(out.splitlines()) == 2


@pytest.mark.slow  # ~10 s: a base of context 128 (the task prompts are ~100 tokens), the task set, a short SFT
def test_the_task_set_and_a_users_file_train_together(tiny_workspace, tmp_path):
    import shutil

    ws = Workspace(tmp_path / "ws")  # a copy: the task set is built into it, not into the shared workspace
    keep = {"corpus", "tokenizer", "shards", "manifest.json"}
    shutil.copytree(tiny_workspace.root, ws.root, ignore=lambda d, names: [n for n in names if d == str(tiny_workspace.root) and n not in keep])
    rc, _, err = cli_in_process(train_args(ws, "base128", 6, "--set", "model.context=128"))
    assert rc == 0, err
    rc, _, err = cli_in_process(["tasks", "build", "-w", str(ws.root)])
    assert rc == 0, err
    data = write_conversations(ws, tmp_path / "chats.jsonl")
    rc, out, err = cli_in_process(sft_args(ws, "base128", "mixed", 4, data, "--tasks", "default"))
    assert rc == 0, err
    mix = next(line for line in out.splitlines() if "sft: base run" in line)
    counts = dict(re.findall(r"(\w+) ([\d,]+)(?=[,)])", mix.split("conversations (")[1]))
    assert set(counts) == {"data", "next_word"} and int(counts["data"]) == 46  # both sources; 2 of the 48 lines held out
    saved = tomllib.loads(ws.run_config_file("mixed").read_text())
    assert saved["sft"]["tasks"] == ["default"] and saved["sft"]["data"] == [str(data)]
