"""The gateway in front of real `londinium serve` processes, through the openai SDK: routing by alias,
by context length and by the trained classifier; the ledger equal to the tokens the clients saw;
fallback when a backend is SIGKILLed mid-run; and the gateway itself as a real process (a bad
config is one line at start-up; SIGTERM drains)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from gateway_helpers import gateway_server, write_config
from serve_helpers import SLOW_RUN, free_port, serve_process, slow_run, stop, trained_run, wait_healthy
from train_helpers import cli_in_process

PERIOD = "Thou art more lovely and more temperate, my lord; the king hath sent for thee."
GENERAL = "Return a new list containing all items from the iterable in ascending order; a key function may be supplied."


@pytest.fixture(scope="module")
def upstreams(tiny_workspace):
    """Two real servers: 'tiny' (the trained run, context 128) and 'wide' (a random-weight run with
    context 512); yields their /v1 URLs."""
    ws = tiny_workspace
    runs = {"tiny": trained_run(ws), "wide": slow_run(ws)}
    procs, urls = [], {}
    try:
        for name, run in runs.items():
            port = free_port()
            procs.append(serve_process(ws, run, port, model=name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls[name] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            wait_healthy(url, timeout=120)
        yield {name: url + "/v1" for name, url in urls.items()}
    finally:
        for p in procs:
            stop(p)


@pytest.fixture(scope="module")
def router_file(tiny_workspace, tmp_path_factory):
    """A classifier trained by the real CLI on the tiny corpus ('domain') and Python's docstrings ('general')."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("router") / "router.json"
    rc, printed, err = cli_in_process(["gateway", "train-router", "-w", str(tiny_workspace.root), "--per-label", "150", "--out", str(out)])
    assert rc == 0, err
    assert "against the majority baseline" in printed
    return out


def backends(urls: dict, tokenizer: str, **prices) -> list[dict]:
    return [{"name": "tiny", "base_url": urls["tiny"], "model": "tiny", "tokenizer": tokenizer, "input_price": 0.1, "output_price": 0.2},
            {"name": "wide", "base_url": urls["wide"], "model": "wide", "tokenizer": tokenizer, "input_price": 1.0, "output_price": 2.0}]


def test_requests_route_by_alias_context_length_and_classifier(upstreams, router_file, tiny_workspace, tmp_path) -> None:
    routes = [{"alias": "tiny", "backends": ["tiny"]}, {"alias": "wide", "backends": ["wide"]},
              {"alias": "london", "backends": ["tiny", "wide"], "strategy": "cost"},
              {"alias": "auto", "backends": ["tiny", "wide"], "classifier": str(router_file),
               "classes": {"domain": ["tiny"], "general": ["wide"]}}]
    cfg = write_config(tmp_path / "gw.toml", backends(upstreams, str(tiny_workspace.tokenizer_file)), routes, keys_required=False)
    with gateway_server(cfg) as (url, gw):
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        time.sleep(0.2)  # the first health check reads each backend's context from its /models
        assert gw.backends["tiny"].context == 128 and gw.backends["wide"].context == 512

        def served_by(model: str, prompt: str, **kw) -> tuple[str, str]:
            raw = c.completions.with_raw_response.create(model=model, prompt=prompt, max_tokens=4, temperature=0, **kw)
            return raw.headers["x-londinium-backend"], raw.headers["x-londinium-route"]

        assert served_by("tiny", "Thou")[0] == "tiny" and served_by("wide", "Thou")[0] == "wide"
        assert served_by("london", "Thou art") == ("tiny", "london -> tiny; cost")  # the cheaper one
        backend, reason = served_by("london", "thou art the king " * 40)  # ~160 tokens: only wide holds it
        assert backend == "wide" and "tiny left out:" in reason and "its context 128" in reason
        backend, reason = served_by("auto", PERIOD)
        assert backend == "tiny" and "classifier: domain" in reason
        backend, reason = served_by("auto", GENERAL)
        assert backend == "wide" and "classifier: general" in reason


def test_the_ledger_holds_exactly_the_tokens_the_clients_saw(upstreams, tiny_workspace, tmp_path) -> None:
    cfg = write_config(tmp_path / "gw.toml", backends(upstreams, ""), [{"alias": "m", "backends": ["tiny"]}])
    with gateway_server(cfg) as (url, gw):
        _, secret = gw.store.create_key("counted")
        c = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=60)

        def one(i: int) -> tuple[int, int]:
            kw = dict(model="m", max_tokens=3 + i % 5, temperature=0.8, seed=i)
            if i % 4 == 0:
                r = c.completions.create(prompt=f"Thou art {i}", **kw)
                return r.usage.prompt_tokens, r.usage.completion_tokens
            if i % 4 == 1:
                r = c.chat.completions.create(messages=[{"role": "user", "content": f"Speak {i}"}], **kw)
                return r.usage.prompt_tokens, r.usage.completion_tokens
            stream = (c.completions.create(prompt=f"The king {i}", stream=True, stream_options={"include_usage": True}, **kw)
                      if i % 4 == 2 else
                      c.chat.completions.create(messages=[{"role": "user", "content": f"O {i}"}], stream=True,
                                                stream_options={"include_usage": True}, **kw))
            last = list(stream)[-1]
            return last.usage.prompt_tokens, last.usage.completion_tokens

        with ThreadPoolExecutor(8) as pool:
            seen = list(pool.map(one, range(24)))
        rows = gw.store.ledger()
        key = gw.store.list_keys()[0]
    assert len(rows) == 24 and all(r["status"] == 200 and r["usage_source"] == "upstream" for r in rows)
    assert sorted((r["prompt_tokens"], r["completion_tokens"]) for r in rows) == sorted(seen)
    assert key.spend == pytest.approx(sum((p * 0.1 + n * 0.2) / 1e6 for p, n in seen))


def test_the_exact_cache_answers_a_repeated_greedy_request_as_the_model_did(upstreams, tiny_workspace, tmp_path) -> None:
    cfg = write_config(tmp_path / "gw.toml", backends(upstreams, ""), [{"alias": "m", "backends": ["tiny"]}],
                       chain=["auth", "usage", "limits", "route", "cache", "upstream"])
    with gateway_server(cfg) as (url, gw):
        _, secret = gw.store.create_key("reader")
        c = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=60)
        ask = dict(model="m", messages=[{"role": "user", "content": "Who art thou?"}], max_tokens=8, temperature=0)
        raws = [c.chat.completions.with_raw_response.create(**ask) for _ in range(2)]
        assert [r.headers["x-londinium-cache"] for r in raws] == ["miss", "hit"]
        assert raws[1].parse().choices[0].message.content == raws[0].parse().choices[0].message.content
        streams = [list(c.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True})) for _ in range(2)]
        texts = ["".join(ch.choices[0].delta.content or "" for ch in s if ch.choices) for s in streams]
        assert texts[0] == texts[1] == raws[0].parse().choices[0].message.content  # greedy: the stream says what the JSON said
        assert [ch.model_dump() for ch in streams[1]] == [ch.model_dump() for ch in streams[0]]  # the same chunks, replayed
        rows = gw.store.ledger()
    assert [(r["usage_source"], r["completion_tokens"] > 0) for r in rows] == [("upstream", True), ("cache", False)] * 2


@pytest.mark.slow  # a third server process (~13 s on 2 busy cores)
def test_a_backend_killed_mid_run_falls_back_with_no_failed_request(upstreams, tiny_workspace, tmp_path) -> None:
    port = free_port()
    victim = serve_process(tiny_workspace, trained_run(tiny_workspace), port, model="tiny",
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120)
        pair = [{"name": "victim", "base_url": f"http://127.0.0.1:{port}/v1", "model": "tiny"},  # free: tried first
                {"name": "tiny", "base_url": upstreams["tiny"], "model": "tiny", "input_price": 1.0}]
        cfg = write_config(tmp_path / "gw.toml", pair, [{"alias": "m", "backends": ["victim", "tiny"], "strategy": "cost"}],
                           keys_required=False, retries=2, breaker_failures=2)
        with gateway_server(cfg) as (url, gw):
            c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)

            def one(i: int) -> str:
                if i == 6:
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                return c.completions.with_raw_response.create(model="m", prompt="Thou", max_tokens=8).headers["x-londinium-backend"]

            with ThreadPoolExecutor(4) as pool:
                answered = list(pool.map(one, range(24)))
            # Four workers: at least three requests finished before the sixth (which kills) started.
            assert len(answered) == 24 and answered[:6].count("victim") >= 3
            assert answered[-4:] == ["tiny"] * 4 and gw.backends["victim"].breaker.state == "open"
            assert all(r["status"] == 200 for r in gw.store.ledger())
    finally:
        stop(victim)


def test_a_bad_gateway_config_fails_at_start_with_one_line(tmp_path) -> None:
    cfg = write_config(tmp_path / "gw.toml", [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "model": "a"}],
                       [{"alias": "m", "backends": ["a", "nope"]}])
    r = subprocess.run([sys.executable, "-m", "londinium", "gateway", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("londinium: error: ") and "routes[0] ('m') names an unknown backend 'nope'" in r.stderr


def test_the_gateway_process_drains_on_sigterm(upstreams, tiny_workspace, tmp_path) -> None:
    slow_run(tiny_workspace)
    port = free_port()
    cfg = write_config(tmp_path / "gw.toml", backends(upstreams, ""), [{"alias": "m", "backends": ["wide"]}],
                       keys_required=False, port=port, shutdown_timeout_s=60)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "londinium", "gateway", "--config", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, timeout=60)
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        chunks = iter(c.completions.create(model="m", prompt="Thou", max_tokens=120, temperature=0, stream=True,
                                           stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
        next(chunks)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises((openai.APIConnectionError, openai.InternalServerError)):
            c.completions.create(model="m", prompt="Thou", max_tokens=2)  # no new work while draining
        rest = list(chunks)
        assert rest[-1].usage.completion_tokens == 120  # the running stream ran to its end
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    from londinium.gateway.store import Store

    store = Store(str(tmp_path / "gateway.db"))
    rows = store.ledger()
    store.close()
    assert [(r["status"], r["completion_tokens"]) for r in rows] == [(200, 120)]


def test_llama_cpps_server_and_londinium_serve_behind_one_endpoint(upstreams, tiny_workspace, tmp_path) -> None:
    """The GGUF export on llama.cpp's OpenAI server as a second kind of backend (the `llama-server` extra)."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("starlette_context") is None:
        pytest.skip("llama.cpp's server is not installed: pip install -e '.[llama-server]'")
    from londinium.config import Config
    from londinium.export.run import export_run

    gguf = export_run(tiny_workspace, Config(), run=trained_run(tiny_workspace), fmt="gguf", out=tmp_path / "model.gguf",
                      log=lambda m: None)
    port = free_port()
    llama = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                              "--port", str(port), "--n_ctx", "128", "--model_alias", "gguf"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120, path="/v1/models")
        pair = [{"name": "gguf", "base_url": f"http://127.0.0.1:{port}/v1", "model": "gguf", "context": 128,
                 "tokenizer": str(tiny_workspace.tokenizer_file)},
                {"name": "tiny", "base_url": upstreams["tiny"], "model": "tiny", "input_price": 1.0}]
        cfg = write_config(tmp_path / "gw.toml", pair, [{"alias": "m", "backends": ["gguf", "tiny"], "strategy": "cost"},
                                                         {"alias": "tiny", "backends": ["tiny"]}], keys_required=False)
        with gateway_server(cfg) as (url, gw):
            c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
            raw = c.completions.with_raw_response.create(model="m", prompt="Thou art", max_tokens=8, temperature=0)
            assert raw.headers["x-londinium-backend"] == "gguf" and raw.parse().usage.completion_tokens <= 8
            last = list(c.completions.create(model="m", prompt="Thou art", max_tokens=8, temperature=0, stream=True,
                                             stream_options={"include_usage": True}))[-1]
            other = c.completions.create(model="tiny", prompt="Thou art", max_tokens=8, temperature=0)
            rows = gw.store.ledger()
        assert [r["backend"] for r in rows] == ["gguf", "gguf", "tiny"] and all(r["status"] == 200 for r in rows)
        if last.usage is not None:  # the server honours include_usage; else the ledger counted with the tokenizer
            assert (rows[1]["prompt_tokens"], rows[1]["completion_tokens"]) == (last.usage.prompt_tokens, last.usage.completion_tokens)
        assert rows[1]["usage_source"] in ("upstream", "tokenizer") and rows[1]["completion_tokens"] > 0
        assert rows[2]["completion_tokens"] == other.usage.completion_tokens
    finally:
        stop(llama)
