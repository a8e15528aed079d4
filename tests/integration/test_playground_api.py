"""The playground's server side over real HTTP: the page and its files open, the /v1/londinium routes
behind the key; scoring equal to the report card's figures; search and documents; reports from a
fixed allow-list only; `serve.playground = false` leaves nothing of it."""

from __future__ import annotations

import json

import httpx
import pytest
from playground_helpers import PASSAGE, RUN, playground_workspace
from serve_helpers import live_server

from londinium.checkpoint import find_checkpoint
from londinium.config import GenerateConfig, ServeConfig
from londinium.infer.engine import Engine
from londinium.model.load import load_run
from londinium.profiles import profile_for
from londinium.serve.app import create_app
from londinium.serve.reports import Provenance

pytestmark = pytest.mark.usefixtures("one_thread")
KEY = "play-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def ws(tiny_workspace, tmp_path_factory):
    return playground_workspace(tiny_workspace, tmp_path_factory)


@pytest.fixture(scope="module")
def trained(ws):
    return load_run(ws, run=RUN, checkpoint="latest")


@pytest.fixture(scope="module")
def url(ws, trained):
    provenance = Provenance.of_checkpoint(ws, RUN, find_checkpoint(ws.checkpoints_dir(RUN), "latest", RUN))
    app = create_app(lambda: Engine.from_trained(trained), RUN, ServeConfig(api_key=KEY), GenerateConfig(), provenance=provenance)
    with live_server(app) as base:
        yield base


def get(url: str, path: str, **kw) -> httpx.Response:
    return httpx.get(url + path, headers=AUTH, timeout=60, **kw)


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, headers=AUTH, json=body, timeout=60)


def test_page_and_files_are_open_but_every_api_call_needs_the_key(url) -> None:
    page = httpx.get(url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    scripts = [line.split('src="')[1].split('"')[0] for line in page.text.splitlines() if "<script" in line]
    assert scripts == ["/playground/app.js"]
    for name in ("app.js", "sse.js", "markdown.js", "style.css"):
        r = httpx.get(f"{url}/playground/{name}", timeout=30)
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff", name
    assert httpx.get(f"{url}/playground/app.js", timeout=30).headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{url}/playground/..%2F..%2Fconfig.py", timeout=30).status_code == 401  # not a file of the page: behind the key
    assert get(url, "/playground/nothing.js").status_code == 404
    for path in ("/v1/londinium/model", "/v1/londinium/reports", "/v1/londinium/search?q=lord"):
        r = httpx.get(url + path, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
        assert get(url, path).status_code == 200, path


def test_model_details_say_what_was_trained_and_evaluated(url, ws) -> None:
    m = get(url, "/v1/londinium/model").json()
    results = json.loads(ws.eval_results(RUN).read_text(encoding="utf-8"))
    assert (m["id"], m["run"], m["checkpoint"], m["step"]) == (RUN, RUN, "step-000020", 20)
    assert m["parameters"] == results["model"]["params"] and m["context"] == 128 and m["vocab_size"] == 512
    assert m["training_tokens"] == 20 * 512  # 20 steps of batch_tokens 512
    assert m["eval"]["perplexity"]["val"]["bits_per_byte"] == results["perplexity"]["val"]["total"]["bits_per_byte"]
    assert m["search"] == {"available": True, "error": None}
    # The example prompt is the corpus profile's, as export's model card takes it: this adopted
    # corpus is neutral, so it is the first words of its own held-out text, not "Thou art".
    assert m["prompt_hint"] == profile_for(ws).prompt_hint(ws) != "Thou art"


def test_score_equals_the_report_cards_figures_for_the_same_text(url, ws) -> None:
    r = post(url, "/v1/londinium/score", {"model": RUN, "text": PASSAGE}).json()
    [want] = json.loads(ws.eval_results(RUN).read_text(encoding="utf-8"))["perplexity"]["texts"].values()
    assert (r["token_count"], r["bytes"]) == (want["tokens"], want["bytes"])
    assert r["bits_per_byte"] == pytest.approx(want["bits_per_byte"], rel=1e-6)
    assert r["perplexity"] == pytest.approx(want["perplexity"], rel=1e-6)
    assert "".join(t["text"] for t in r["tokens"]) == PASSAGE
    assert all(PASSAGE.startswith(t["text"], t["start"]) and t["logprob"] < 0 for t in r["tokens"])
    nats = -sum(t["logprob"] for t in r["tokens"])
    assert nats / r["token_count"] == pytest.approx(r["loss"], rel=1e-9)


# the text as JSON: a lone surrogate is valid JSON (an escape), but not text
@pytest.mark.parametrize("text, says", [('"' + "Thus " * 2000 + '"', "londinium eval --text"), ('"Thus \\ud800"', "lone UTF-16 surrogate")],
                         ids=["too long", "not unicode"])
def test_score_refuses_what_it_cannot_score_with_one_line(url, text, says) -> None:
    body = '{"model": "%s", "text": %s}' % (RUN, text)
    r = httpx.post(url + "/v1/londinium/score", headers={**AUTH, "Content-Type": "application/json"}, content=body.encode(), timeout=60)
    assert r.status_code == 400 and says in r.json()["error"]["message"] and r.json()["error"]["param"] == "text"


def test_chat_prompt_is_what_the_chat_request_gives_the_model(url) -> None:
    body = {"model": RUN, "messages": [{"role": "system", "content": "Speak as a player."}, {"role": "user", "content": "Good morrow"}]}
    shown = post(url, "/v1/londinium/chat/prompt", body).json()
    used = post(url, "/v1/chat/completions", {**body, "max_tokens": 1}).json()["usage"]["prompt_tokens"]
    assert shown["prompt_tokens"] == used
    assert shown["prompt"] == "<|system|>\nSpeak as a player.<|end|>\n<|user|>\nGood morrow<|end|>\n<|assistant|>\n"
    assert "raise_exception" in shown["template"]


def test_search_hits_lead_to_their_documents(url) -> None:
    hits = get(url, "/v1/londinium/search", params={"q": "saith the Lord", "k": 3}).json()["hits"]
    assert len(hits) == 3 and [h["rank"] for h in hits] == [1, 2, 3]
    for hit in hits:
        doc = get(url, "/v1/londinium/document", params={"id": hit["id"]}).json()
        assert doc["text"][hit["snippet_start"]:hit["snippet_end"]] == hit["snippet"]
        assert (doc["source"], doc["split"]) == (hit["source"], hit["split"])
    missing = get(url, "/v1/londinium/document", params={"id": "no/such#1"})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "id"
    bad = get(url, "/v1/londinium/search", params={"q": "lord", "split": "nowhere"})
    assert bad.status_code == 400 and "nowhere" in bad.json()["error"]["message"]


def test_reports_come_from_the_allow_list_only(url, ws) -> None:
    listed = {r["name"]: r for r in get(url, "/v1/londinium/reports").json()["data"]}
    assert [n for n, r in listed.items() if r["available"]] == ["model-card", "report-card", "training", "tokenizer"]
    assert listed["data-card"]["hint"] == "run `londinium corpus build`"  # the tiny corpus was written, not built
    assert get(url, "/v1/londinium/reports/report-card").text == ws.eval_report_md(RUN).read_text(encoding="utf-8")
    card = get(url, "/v1/londinium/reports/model-card").text
    assert card == (ws.exports_dir / f"{RUN}-step-000020" / "README.md").read_text(encoding="utf-8")
    plot = get(url, "/v1/londinium/reports/report-card/loss.png")
    assert plot.headers["content-type"] == "image/png" and plot.content == (ws.eval_run_dir(RUN) / "loss.png").read_bytes()
    assert get(url, "/v1/londinium/reports/training/train_loss.png").content == ws.loss_plot(RUN).read_bytes()
    for path in ("/v1/londinium/reports/report-card/results.json",  # beside the report, not linked by it
                 "/v1/londinium/reports/report-card/perplexity_by_source.PNG",
                 "/v1/londinium/reports/report-card/..%2F..%2Fruns%2Fplay%2Ftrain_loss.png",
                 "/v1/londinium/reports/..%2Fmanifest.json",
                 "/v1/londinium/reports/%2Fetc%2Fpasswd",
                 "/v1/londinium/reports/data-card",
                 "/v1/londinium/reports/README.md"):
        r = get(url, path)
        assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}, path


def test_without_an_index_search_says_how_to_build_one(tiny_workspace, trained) -> None:
    # tiny_workspace has no index (and neither run nor reports of RUN): the model is served all the same
    app = create_app(lambda: Engine.from_trained(trained), RUN, ServeConfig(), GenerateConfig(),
                     provenance=Provenance(workspace=tiny_workspace, run=RUN))
    with live_server(app) as base:
        r = httpx.get(base + "/v1/londinium/search", params={"q": "lord"}, timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "no_search_index"
        assert "londinium index build" in r.json()["error"]["message"]
        assert httpx.get(base + "/v1/londinium/model", timeout=30).json()["search"]["available"] is False
        listed = httpx.get(base + "/v1/londinium/reports", timeout=30).json()["data"]
        assert [r["name"] for r in listed if r["available"]] == ["tokenizer"]


def test_playground_false_leaves_only_the_openai_api(trained) -> None:
    app = create_app(lambda: Engine.from_trained(trained), RUN, ServeConfig(playground=False), GenerateConfig())
    with live_server(app) as base:
        for path in ("/", "/playground/app.js", "/v1/londinium/model", "/v1/londinium/reports"):
            assert httpx.get(base + path, timeout=30).status_code == 404, path
        assert httpx.get(base + "/v1/models", timeout=30).status_code == 200
