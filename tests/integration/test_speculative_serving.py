"""A draft model in `londinium generate --draft`, `serve --draft`, and a server sized by a memory
budget: the plumbing from flags to engine (random weights: greedy output must be the target's own,
token for token, and requests past the budget's slots must wait for one, not fail)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from serve_helpers import live_server

from londinium.checkpoint import save_checkpoint
from londinium.cli import main
from londinium.config import Config, ModelConfig, load_config, to_toml
from londinium.infer import Engine, SamplingParams
from londinium.model.gpt import GPT
from londinium.model.memory import draft_bytes, max_sequences, memory_plan
from londinium.tokenizer.codec import load_tokenizer, tokenizer_sha256

pytestmark = pytest.mark.usefixtures("one_thread")

TARGET, DRAFT, FOREIGN = "spec-target", "spec-draft", "spec-foreign"


def save_run(ws, run: str, n_layer: int, n_embd: int, seed: int, tokenizer_sha256: str) -> None:
    cfg = Config()
    cfg.model = ModelConfig(n_layer=n_layer, n_head=2, n_embd=n_embd, context=64, vocab_size=load_tokenizer(ws).get_vocab_size(),
                            positions="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    torch.manual_seed(seed)
    model = GPT(cfg.model)
    with torch.no_grad():  # spread the weights so greedy output varies instead of repeating one token
        for name, p in model.named_parameters():
            if p.ndim == 2 and "wte" not in name:
                p.normal_(0, 2 / p.shape[1] ** 0.5)
    save_checkpoint(ws.checkpoints_dir(run), 1, model, {"step": 1}, to_toml(cfg), {"run": run, "tokenizer_sha256": tokenizer_sha256})


@pytest.fixture(scope="module")
def ws(tiny_workspace):
    """The shared tiny workspace with a target run, a smaller draft run, and a run whose checkpoint
    records another tokenizer."""
    sha = tokenizer_sha256(tiny_workspace)
    save_run(tiny_workspace, TARGET, 2, 64, 0, sha)
    save_run(tiny_workspace, DRAFT, 1, 32, 1, sha)
    save_run(tiny_workspace, FOREIGN, 1, 32, 2, "0" * 64)
    return tiny_workspace


def generate_json(ws, capsys, *flags: str) -> dict:
    assert main(["generate", "-w", str(ws.root), "--run", TARGET, "--checkpoint", "latest", "--prompt", "Thou art",
                 "--greedy", "--max-tokens", "24", "--ignore-eos", "--format", "json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("draft", [DRAFT, TARGET])
def test_generate_with_a_draft_gives_the_targets_greedy_tokens(ws, capsys, draft: str) -> None:
    alone = generate_json(ws, capsys)
    drafted = generate_json(ws, capsys, "--draft", draft, "--set", "generate.draft_checkpoint=latest")
    assert drafted["choices"][0]["token_ids"] == alone["choices"][0]["token_ids"]
    assert len(set(alone["choices"][0]["token_ids"])) > 4  # output that a wrong acceptance would change


def test_a_draft_from_another_tokenizer_or_no_run_is_one_clear_line(ws, capsys) -> None:
    flags = ["generate", "-w", str(ws.root), "--run", TARGET, "--checkpoint", "latest", "--prompt", "Thou", "--max-tokens", "2"]
    assert main([*flags, "--draft", FOREIGN, "--set", "generate.draft_checkpoint=latest"]) == 2
    err = capsys.readouterr().err
    assert "another tokenizer" in err and "Traceback" not in err
    assert main([*flags, "--draft", "no-such-run"]) == 2
    assert "no-such-run" in capsys.readouterr().err


def test_the_engine_refuses_a_draft_with_the_int8_kv_cache(ws) -> None:
    from londinium.config import GenerateConfig
    from londinium.errors import ConfigError

    gen = GenerateConfig(kv_dtype="int8", draft_run=DRAFT, draft_checkpoint="latest")
    with pytest.raises(ConfigError, match="float32 KV cache"):
        Engine.from_workspace(ws, run=TARGET, checkpoint="latest", gen=gen)


def test_a_server_sized_by_its_memory_budget_queues_what_does_not_fit_and_drafts_alone(ws) -> None:
    """serve.memory_budget_mb gives max_running = the calculator's count (weights, a context of KV
    cache per slot, a step's activations, the prefix cache, the draft's weights and cache); eight
    requests at once on three slots all finish, greedy as the target alone decodes them."""
    import openai

    from londinium.serve.app import create_app
    from serve_helpers import metric

    from londinium.serve.server import run_loader

    model_cfg = load_config(ws.checkpoints_dir(TARGET) / "step-000001" / "config.toml").model
    draft_cfg = load_config(ws.checkpoints_dir(DRAFT) / "step-000001" / "config.toml").model
    step_tokens, extra = 512, draft_bytes(draft_cfg)
    slot = memory_plan(model_cfg, 4, step_tokens=step_tokens).total - memory_plan(model_cfg, 3, step_tokens=step_tokens).total
    budget = memory_plan(model_cfg, 3, step_tokens=step_tokens).total + extra + slot // 2  # room for 3.5 slots
    assert max_sequences(model_cfg, budget, extra_bytes=extra, step_tokens=step_tokens) == 3
    cfg = load_config(None, ["serve.checkpoint=latest", f"serve.memory_budget_mb={budget / 2**20}", f"generate.draft_run={DRAFT}",
                             "generate.draft_checkpoint=latest", f"serve.max_step_tokens={step_tokens}"])
    load, _, _ = run_loader(ws, cfg, TARGET)
    prompts = [f"Thou art {w}" for w in ("fair", "the king", "a man", "not", "my lord", "gone", "here", "sweet")]
    alone = Engine.from_workspace(ws, run=TARGET, checkpoint="latest")
    want = [c.text for c in alone.generate(prompts, SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True))]
    app = create_app(load, "tiny", cfg.serve, cfg.generate)
    with live_server(app) as url:
        state = app.state.server
        assert metric(url, "londinium_max_running_sequences") == 3 and state.engine.speculator is not None
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)

        def complete(prompt: str) -> str:
            r = client.completions.create(model="tiny", prompt=prompt, max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
            return r.choices[0].text

        with ThreadPoolExecutor(len(prompts)) as pool:
            got = list(pool.map(complete, prompts))
        one = complete(prompts[0])  # alone on the server: the draft proposes
        stats = state.loop.stats()
        slots = state.engine.batch.slots.slots
    assert got == want and one == want[0]
    assert stats["finished"] == len(prompts) + 1 and stats["failed"] == 0 and stats["rejected"] == 0
    assert slots == 3  # the cache grew to the budget's slots and no further: the other five waited
    assert state.engine.counters["drafted"] > 0


def test_serve_names_a_missing_draft_and_a_budget_too_small_in_one_line(ws, capsys) -> None:
    from serve_helpers import free_port

    base = ["serve", "-w", str(ws.root), "--run", TARGET, "--checkpoint", "latest", "--port", str(free_port()), "--set", "serve.playground=false"]
    assert main([*base, "--draft", "no-such-run"]) == 2  # checked before the port opens
    assert "no-such-run" in capsys.readouterr().err
    assert main([*base, "--memory-budget", "0.01"]) == 2  # the model loads, then its plan is over the budget
    err = capsys.readouterr().err
    assert "serve.memory_budget_mb = 0.01 MiB does not hold one sequence" in err and "Traceback" not in err
