"""`londinium serve --export DIR`: a `londinium export` directory read back into our GPT serves the
same tokens as the run it was exported from; a directory that is not an export fails at once."""

from __future__ import annotations

import openai
import pytest
import torch
from serve_helpers import live_server, trained_run
from train_helpers import cli_in_process

from londinium.config import Config, GenerateConfig, ServeConfig
from londinium.export.run import export_run
from londinium.model.from_hf import load_export
from londinium.model.load import load_run
from londinium.serve.app import create_app
from londinium.serve.server import export_loader

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def export_dir(tiny_workspace, tmp_path_factory):
    run = trained_run(tiny_workspace)
    out = tmp_path_factory.mktemp("export") / "tiny-hf"
    export_run(tiny_workspace, Config(), run=run, checkpoint="latest", fmt="hf", out=out, log=lambda m: None)
    return out


def test_an_export_serves_what_its_run_serves(tiny_workspace, export_dir) -> None:
    trained = load_run(tiny_workspace, run=trained_run(tiny_workspace), checkpoint="latest")
    model, tokenizer = load_export(export_dir)
    x = torch.randint(0, tokenizer.get_vocab_size(), (1, 20))
    assert torch.equal(model(x)[0], trained.model(x)[0])  # float32 export: the very same weights
    load, name = export_loader(export_dir, "cpu")
    assert name == "tiny-hf"
    from londinium.infer.engine import Engine

    answers = []
    for loader in (load, lambda: Engine.from_trained(trained)):
        with live_server(create_app(loader, "m", ServeConfig(), GenerateConfig())) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hail"}], max_tokens=12,
                                               temperature=0, logprobs=True)
            answers.append((r.choices[0].message.content, [e.logprob for e in r.choices[0].logprobs.content]))
    assert answers[0][0] == answers[1][0]
    assert answers[0][1] == pytest.approx(answers[1][1], abs=1e-5)


def test_serving_a_directory_that_is_no_export_fails_with_its_name(tmp_path) -> None:
    rc, out, err = cli_in_process(["serve", "--export", str(tmp_path)])
    assert rc == 2 and str(tmp_path) in err and "config.json" in err
