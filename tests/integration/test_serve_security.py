"""The server's security defaults: with a key, nothing but /health and the playground's page and
files (docs/playground.md: they hold no data) answers without it (the metrics, the schema and its
docs pages included, unless serve.open_docs opens those); the key is compared in
constant time; it binds loopback by default and warns when told to bind elsewhere without a key;
prompts stay out of the logs unless serve.log_prompts asks for them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import httpx
import pytest
from serve_helpers import free_port, live_server, metric, trained_run

from londinium.config import Config, GenerateConfig, ServeConfig
from londinium.infer.engine import Engine
from londinium.model.load import load_run
from londinium.serve import app as app_module
from londinium.serve.app import create_app

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL, KEY = "tiny", "security-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOCS = ("/docs", "/redoc", "/openapi.json")


@pytest.fixture(scope="module")
def trained(tiny_workspace):
    return load_run(tiny_workspace, run=trained_run(tiny_workspace), checkpoint="latest")


def requests_to_every_route(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app has, path parameters filled in, and a few it has not."""
    # The schema lists the API's routes (those of an included router too); the docs routes are not in it.
    found = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    found |= {(m, r.path) for r in app.routes if hasattr(r, "path") for m in r.methods if m != "HEAD"}
    out = sorted((m, p.replace("{name:path}", MODEL).replace("{name}", MODEL)) for m, p in found)
    return out + [("GET", "/playground/app.js"), ("GET", "/v1/nothing"), ("POST", "/v1/embeddings"), ("DELETE", "/v1/models/tiny"),
                  ("GET", "/docs/oauth2-redirect"), ("GET", "/v1/../metrics")]


@pytest.mark.parametrize("open_docs", [False, True])
def test_with_a_key_only_health_answers_without_it(trained, open_docs) -> None:
    app = create_app(lambda: Engine.from_trained(trained), MODEL, ServeConfig(api_key=KEY, open_docs=open_docs), GenerateConfig())
    routes = requests_to_every_route(app)
    paths = {p for _, p in routes}
    assert {"/health", "/metrics", "/v1/completions", "/v1/chat/completions", "/v1/models", *DOCS} <= paths
    with live_server(app) as url:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
                r = httpx.request(method, url + path, headers=headers, json={"model": MODEL, "prompt": "x"}, timeout=30)
                opened = path in ("/health", "/", "/playground/app.js") or (open_docs and path in DOCS)
                if opened:
                    assert r.status_code == 200, (method, path, r.status_code)
                else:
                    assert r.status_code == 401, (method, path, headers, r.status_code, r.text[:200])
                    assert r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/openapi.json", headers=AUTH).json()["paths"]["/v1/completions"]
        assert "swagger" in httpx.get(f"{url}/docs", headers=AUTH).text.lower()
        assert httpx.get(f"{url}/metrics", headers=AUTH).status_code == 200
        assert httpx.post(f"{url}/v1/completions", headers=AUTH, json={"model": MODEL, "prompt": "x", "max_tokens": 2}).status_code == 200


def test_the_key_is_compared_in_constant_time(trained, monkeypatch) -> None:
    compared = []
    real = app_module.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", spy)
    app = create_app(lambda: Engine.from_trained(trained), MODEL, ServeConfig(api_key=KEY), GenerateConfig())
    with live_server(app) as url:
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer guess"}).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers=AUTH).status_code == 200
    assert compared == [(b"guess", KEY.encode()), (KEY.encode(), KEY.encode())]


def test_default_bind_is_loopback_and_elsewhere_without_a_key_warns(tiny_workspace) -> None:
    assert ServeConfig().host == "127.0.0.1" and Config().serve.host == "127.0.0.1"
    run = trained_run(tiny_workspace)
    # 192.0.2.1 is TEST-NET-1 (RFC 5737), on no interface here: the bind fails, nothing is ever exposed.
    base = [sys.executable, "-m", "londinium", "serve", "-w", str(tiny_workspace.root), "--run", run, "--checkpoint", "latest",
            "--host", "192.0.2.1", "--port", str(free_port())]
    without = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert without.returncode != 0 and "warning: listening on 192.0.2.1 without an API key" in without.stderr, without.stderr
    with_key = subprocess.run([*base, "--api-key", KEY], capture_output=True, text=True, timeout=120)
    assert with_key.returncode != 0 and "warning" not in with_key.stderr, with_key.stderr
    assert "192.0.2.1" in with_key.stderr  # it did try that address (and says it could not listen)


@pytest.mark.parametrize("log_prompts", [False, True])
def test_prompts_stay_out_of_the_logs_unless_asked(trained, tmp_path, caplog, capfd, log_prompts) -> None:
    marker = "Zanzibarian marmalade"  # the user's text, which must not reach a log
    log_path = tmp_path / "requests.jsonl"
    cfg = ServeConfig(request_log=str(log_path), log_prompts=log_prompts)
    caplog.set_level(logging.DEBUG)
    with live_server(create_app(lambda: Engine.from_trained(trained), MODEL, cfg, GenerateConfig())) as url:
        httpx.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": marker, "max_tokens": 3}, timeout=30)
        httpx.post(f"{url}/v1/chat/completions", json={"model": MODEL, "max_tokens": 3, "stream": True,
                                                       "messages": [{"role": "user", "content": marker}]}, timeout=30)
        httpx.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": marker, "temperature": -1}, timeout=30)
        httpx.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": marker * 200}, timeout=30)  # too long
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(records) == 4 and [r["status"] for r in records] == [200, 200, 400, 400]
    logged = log_path.read_text() + caplog.text + "".join(capfd.readouterr())
    assert (marker in log_path.read_text()) == log_prompts
    if not log_prompts:
        assert marker not in logged


# ---- DNS rebinding: the Host and Origin checks (serve/hosts.py) ----------------------------------


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_a_rebound_host_is_421_on_every_route_and_runs_nothing(trained) -> None:
    app = create_app(lambda: Engine.from_trained(trained), MODEL, ServeConfig(api_key=KEY), GenerateConfig())
    routes = requests_to_every_route(app)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        port = port_of(url)
        # What a rebinding page's requests carry: its own name (with or without the port), a
        # loopback-looking name under its control, or our address on another port.
        hosts = (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}", f"127.0.0.1.nip.io:{port}",
                 f"127.0.0.1:{port + 1}", f"localhost:{port}0", f"[::1]:{port}x", "", "evil example")
        few = [("POST", "/v1/completions"), ("GET", "/health"), ("GET", "/docs")]
        for host in hosts:
            for method, path in routes if host == hosts[0] else few:  # every route for the plain case
                for auth in (AUTH, {}):  # refused for its Host before the key is looked at
                    r = client.request(method, path, headers={"Host": host, **auth}, json={"model": MODEL, "prompt": "x"})
                    assert r.status_code == 421, (host, method, path, r.status_code, r.text[:200])
                    error = r.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "misdirected_request"
        assert "serve.allowed_hosts" in error["message"]
        assert app.state.server.stats()["submitted"] == 0  # the model never ran for them
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"127.0.0.2:{port}"):
            r = client.post("/v1/completions", headers={"Host": host, **AUTH}, json={"model": MODEL, "prompt": "x", "max_tokens": 2})
            assert r.status_code == 200, (host, r.text[:200])
        assert metric(url, 'londinium_requests_total{endpoint="/v1/completions",status="421"}', headers=AUTH) == 9 * 2


def test_a_page_from_another_site_is_403_and_gets_no_cors(trained) -> None:
    app = create_app(lambda: Engine.from_trained(trained), MODEL, ServeConfig(), GenerateConfig())
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
    with live_server(app) as url:
        port = port_of(url)
        for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"http://localhost:{port + 1}",
                       f"https://127.0.0.1.evil.example:{port}"):
            r = httpx.post(f"{url}/v1/completions", headers={"Origin": origin}, json=body)
            assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed", (origin, r.text[:200])
            preflight = httpx.options(f"{url}/v1/completions", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
            assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
        own = httpx.post(f"{url}/v1/completions", headers={"Origin": f"http://127.0.0.1:{port}"}, json=body)
        assert own.status_code == 200 and "access-control-allow-origin" not in own.headers  # its own /docs page


def test_allow_lists_open_named_hosts_and_origins_with_cors(trained) -> None:
    cfg = ServeConfig(allowed_hosts=["api.example.com", "Internal.example:9000"], allowed_origins=["https://app.example.com"])
    app = create_app(lambda: Engine.from_trained(trained), MODEL, cfg, GenerateConfig())
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
    with live_server(app) as url:
        for host, status in (("api.example.com", 200), ("API.example.com:443", 200), ("internal.example:9000", 200),
                             ("internal.example:9001", 421), ("other.example.com", 421), (f"127.0.0.1:{port_of(url)}", 200)):
            assert httpx.post(f"{url}/v1/completions", headers={"Host": host}, json=body).status_code == status, host
        app_origin = {"Origin": "https://app.example.com"}
        preflight = httpx.options(f"{url}/v1/chat/completions", headers={
            **app_origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        r = httpx.post(f"{url}/v1/completions", headers=app_origin, json=body)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert httpx.post(f"{url}/v1/completions", headers={"Origin": "https://evil.example"}, json=body).status_code == 403
    anywhere = ServeConfig(host="0.0.0.0", allowed_hosts=["*"], allowed_origins=["*"])
    with live_server(create_app(lambda: Engine.from_trained(trained), MODEL, anywhere, GenerateConfig())) as url:
        r = httpx.post(f"{url}/v1/completions", headers={"Host": "anything.example", "Origin": "https://x.example"}, json=body)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def test_bound_beyond_loopback_it_answers_to_ip_addresses_but_names_need_the_list(trained) -> None:
    app = create_app(lambda: Engine.from_trained(trained), MODEL, ServeConfig(host="0.0.0.0"), GenerateConfig())
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
    with live_server(app) as url:
        port = port_of(url)
        for host, status in ((f"192.0.2.7:{port}", 200), (f"[2001:db8::1]:{port}", 200), (f"localhost:{port}", 200),
                             (f"evil.example:{port}", 421), (f"box.lan:{port}", 421), (f"192.0.2.7:{port + 1}", 421)):
            r = httpx.post(f"{url}/v1/completions", headers={"Host": host}, json=body)
            assert r.status_code == status, (host, r.text[:200])
        assert "an IP address or localhost" in r.json()["error"]["message"]
