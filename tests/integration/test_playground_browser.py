"""The playground in a real browser: Debian's Chromium, headless, driven by Playwright, against two
real `londinium serve` processes on 127.0.0.1 (the page's server with an API key, and a second one
that allows the page's origin, for Compare). Each view is checked against what the API answers for
the same request, and saved as a screenshot under the test's tmp dir (and, with
LONDINIUM_PLAYGROUND_SHOTS=<folder>, copied there: docs/playground/ holds the ones the docs show).
The page's JavaScript has its own unit tests (playground_js/unit.js), run in the same browser.

Needs `playwright` (the dev extra) and a Chromium at /usr/bin/chromium ($LONDINIUM_CHROMIUM): .ci/run
installs Debian's; without them the tests are skipped here, and fail under CI."""

from __future__ import annotations

import codecs
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from playground_helpers import OTHER, PASSAGE, RUN, playground_workspace
from serve_helpers import free_port, serve_process, stop, wait_healthy

pytestmark = pytest.mark.slow  # ~30-40 s on 2 busy cores: a workspace, two servers, a browser
KEY = "playground-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
WEB = Path(__file__).resolve().parents[2] / "src" / "londinium" / "web"
UNITS = Path(__file__).resolve().parent / "playground_js"
CHROMIUM = os.environ.get("LONDINIUM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SEED = 0  # with it the tiny model's replies run to max_tokens (no early end-of-text): many chunks to watch
BOUNDS = (0.5, 0.2, 0.05, 0.01)  # tokens.js BINS: the colour classes p0 (likely) .. p4


def playwright_api():
    """Playwright's sync API and a Chromium, or a skip saying what is missing (a failure under CI, which installs both)."""
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
    missing = "playwright is not installed (pip install -e '.[dev]')" if sync_api is None else \
        None if Path(CHROMIUM).is_file() else f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $LONDINIUM_CHROMIUM)"
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {missing}")
    if missing:
        pytest.skip(missing)
    return sync_api


@pytest.fixture(scope="module")
def sync_api():
    return playwright_api()


@pytest.fixture(scope="module")
def chromium(sync_api):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def ws(tiny_workspace, tmp_path_factory):
    return playground_workspace(tiny_workspace, tmp_path_factory)


@pytest.fixture(scope="module")
def servers(ws, tmp_path_factory):
    """(the page's server, the other one): RUN behind KEY with a chunk per engine step, and OTHER,
    which lets the first one's page call it (serve.allowed_origins)."""
    logs = tmp_path_factory.mktemp("servers")
    ports = free_port(), free_port()
    origin = f"http://127.0.0.1:{ports[0]}"
    procs = [serve_process(ws, RUN, ports[0], "--api-key", KEY, "--set", "serve.stream_interval=1", model=RUN,
                           stdout=open(logs / "a.log", "w"), stderr=subprocess.STDOUT),
             serve_process(ws, OTHER, ports[1], "--set", f"serve.allowed_origins=['{origin}']", model=OTHER,
                           stdout=open(logs / "b.log", "w"), stderr=subprocess.STDOUT)]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for u in urls:
            wait_healthy(u, timeout=180)
        yield urls
    finally:
        for p in procs:
            stop(p)


def shot(page, name: str, tmp_path: Path, full_page: bool = False) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path, full_page=full_page)
    if os.environ.get("LONDINIUM_PLAYGROUND_SHOTS"):  # for the docs: 256 colours, a third of the size, text as sharp
        from PIL import Image

        folder = Path(os.environ["LONDINIUM_PLAYGROUND_SHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").quantize(256).save(folder / path.name, optimize=True)


def enter_key(page, key: str) -> None:
    page.locator("#key-input").fill(key)
    page.locator("#key-input").press("Enter")


def open_page(chromium, sync_api, url: str, errors: list, **context):
    ctx = chromium.new_context(**({"viewport": {"width": 1280, "height": 860}} | context))
    page = ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    return page


@pytest.fixture(scope="module")
def page(chromium, sync_api, servers):
    """The page on the first server, the key entered: what the view tests share."""
    errors: list[str] = []
    page = open_page(chromium, sync_api, servers[0], errors)
    enter_key(page, KEY)
    sync_api.expect(page.locator("#model-line")).to_contain_text("parameters", timeout=30_000)
    yield page
    page.context.close()
    assert errors == [], errors  # no uncaught exception in the page's scripts all along


def sampling(page, **values) -> None:
    """Fill the sampling settings (the panel is opened if it is closed)."""
    page.locator("#settings").evaluate("d => { d.open = true; }")
    for name, value in values.items():
        page.locator(f"#settings input[name={name}]").fill(str(value))


def percent(p: float) -> str:
    """tokens.js `percent`."""
    x = p * 100
    return f"{round(x)}%" if x >= 10 else f"{x:.1f}%" if x >= 1 else f"{x:#.2g}%" if x >= 0.001 else "<0.001%"


def colour(logprob: float) -> str:
    p = math.exp(logprob)
    return f"p{next((i for i, b in enumerate(BOUNDS) if p >= b), len(BOUNDS))}"


def pieces(content: list[dict]) -> list[tuple[str, dict]]:
    """Each chat token's text (its bytes decoded in order, as tokens.js `fromChat` does), with the entry."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # as TextDecoder: U+FFFD for bytes that are not UTF-8
    return [(decoder.decode(bytes(e["bytes"])), e) for e in content]


def test_javascript_units_pass_in_chromium(chromium) -> None:
    """The SSE parser, the probability colouring and the Markdown renderer, tested in this browser.
    The page is served to it from the files (no server): /web/ the playground, /tests/ the tests."""
    page = chromium.new_page()

    def serve(route) -> None:
        path = route.request.url.split("//unit.test", 1)[1]
        root, _, name = path.lstrip("/").partition("/")
        file = {"web": WEB, "tests": UNITS}[root] / name
        route.fulfill(body=file.read_bytes(), content_type="text/javascript" if name.endswith(".js") else "text/html")

    page.route("http://unit.test/**", serve)
    page.goto("http://unit.test/tests/unit.html")
    page.wait_for_selector("body[data-done=yes]", state="attached", timeout=30_000)
    results = page.evaluate("() => window.results")
    page.close()
    failed = [f"{r['name']}: {r['error']}" for r in results if not r["ok"]]
    assert not failed, "\n".join(failed)
    assert len(results) >= 15


def test_the_key_is_asked_once_and_a_wrong_key_is_an_error(chromium, sync_api, servers, tmp_path) -> None:
    expect, errors = sync_api.expect, []
    page = open_page(chromium, sync_api, servers[0], errors)
    try:
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        expect(page.locator("#key-input")).to_be_focused()  # the modal dialog takes the focus: type at once
        page.keyboard.type("not-the-key")
        page.keyboard.press("Enter")
        expect(page.locator("#key-error")).to_contain_text("Incorrect or missing API key")
        expect(dialog).to_be_visible()
        shot(page, "api-key", tmp_path)
        enter_key(page, KEY)
        expect(dialog).to_be_hidden()
        expect(page.locator("#model-line")).to_contain_text(f"Model {RUN}: 0.14 M parameters")
        page.reload()  # kept for the tab's session: not asked again
        expect(page.locator("#model-line")).to_contain_text("parameters")
        expect(dialog).to_be_hidden()
        assert errors == []
    finally:
        page.context.close()


def test_chat_streams_tokens_coloured_by_probability_with_alternatives(page, sync_api, servers, tmp_path) -> None:
    expect = sync_api.expect
    page.locator("#tab-chat").click()
    # Watch the reply while it is still streaming (aria-busy): its token count, at every change.
    page.evaluate("""() => { window.seen = []; new MutationObserver(() => {
        const r = document.querySelector('#messages .msg.assistant');
        if (r && r.getAttribute('aria-busy') === 'true') window.seen.push(r.querySelectorAll('.tok').length);
      }).observe(document.getElementById('messages'), {subtree: true, childList: true, attributes: true}); }""")
    sampling(page, seed=SEED, max_tokens=40)
    page.locator("#prompt").fill("Good morrow")
    page.locator("#prompt").press("Control+Enter")
    reply = page.locator("#messages .msg.assistant")
    expect(reply).to_have_attribute("aria-busy", "false", timeout=60_000)
    seen = [n for n in page.evaluate("() => window.seen") if n]
    assert len(set(seen)) >= 2 and seen == sorted(seen), seen  # tokens arrived in steps, growing

    # The same request through the API: the page shows its tokens, coloured by their probabilities.
    body = {"model": RUN, "messages": [{"role": "user", "content": "Good morrow"}], "max_tokens": 40, "seed": SEED,
            "logprobs": True, "top_logprobs": 5}
    content = httpx.post(servers[0] + "/v1/chat/completions", json=body, headers=AUTH, timeout=60).json()["choices"][0]["logprobs"]["content"]
    shown = [e for text, e in pieces(content) if text]  # a token holding half a character shows nothing
    want = [(text, colour(e["logprob"])) for text, e in pieces(content) if text]
    tokens = reply.locator(".tok")
    got = [(t["text"], t["cls"]) for t in tokens.evaluate_all("ts => ts.map(t => ({text: t.textContent, cls: t.classList[1]}))")]
    assert got == want and len(got) == 40
    expect(reply.locator(".meta")).to_have_text("40 tokens; stopped because it reached max tokens.")

    # Keyboard: one tab stop into the reply, the arrow keys along it, the tooltip follows the focus.
    tip = page.locator("#token-tip")
    tokens.first.focus()
    expect(tip).to_be_visible()
    first = shown[0]
    expect(tip.locator("p")).to_contain_text(percent(math.exp(first["logprob"])))
    assert tip.locator("li").count() == 5
    expect(tip.locator("li").first).to_contain_text(percent(math.exp(first["top_logprobs"][0]["logprob"])))
    page.keyboard.press("ArrowRight")
    expect(tokens.nth(1)).to_be_focused()
    expect(tip.locator("p")).to_contain_text(percent(math.exp(shown[1]["logprob"])))
    assert tokens.evaluate_all("ts => ts.filter(t => t.tabIndex === 0).length") == 1
    tokens.nth(6).hover()  # and on hover
    expect(tip.locator("p")).to_contain_text(percent(math.exp(shown[6]["logprob"])))
    shot(page, "chat", tmp_path)

    page.locator("#show-prompt").click()
    expect(page.locator("#prompt-view-text")).to_contain_text("<|user|>\nGood morrow<|end|>")


def test_score_a_text_shows_bits_per_byte_and_the_surprising_words(page, sync_api, servers, tmp_path) -> None:
    expect = sync_api.expect
    page.locator("#tab-score").click()
    hint = httpx.get(servers[0] + "/v1/londinium/model", headers=AUTH, timeout=60).json()["prompt_hint"]
    expect(page.locator("#score-text")).to_have_value(hint)  # the corpus's own example, not "Thus saith the Lord."
    page.locator("#score-text").fill(PASSAGE)
    page.locator("#score-form button").click()
    scored = httpx.post(servers[0] + "/v1/londinium/score", json={"model": RUN, "text": PASSAGE}, headers=AUTH, timeout=60).json()
    expect(page.locator("#score-summary")).to_contain_text(f"{scored['token_count']} tokens, {scored['bytes']} bytes: "
                                                           f"{scored['bits_per_byte']:.3f} bits per byte")
    tokens = page.locator("#score-tokens .tok")
    assert tokens.evaluate_all("ts => ts.map(t => t.textContent)") == [t["text"] for t in scored["tokens"]]
    # The most surprising words: the surprise of the tokens overlapping each word, summed (5 of 18 words: one in four).
    surprise = {}
    for m in re.finditer(r"[A-Za-z']+", PASSAGE):
        overlapping = [t for t in scored["tokens"] if t["start"] < m.end() and t["start"] + len(t["text"]) > m.start()]
        surprise[(m.group(), m.start())] = (-sum(t["logprob"] for t in overlapping), [t["start"] for t in overlapping])
    worst = sorted(surprise, key=lambda w: -surprise[w][0])[:5]
    assert page.locator("#surprising li mark").all_text_contents() == [w for w, _ in worst]
    marked = tokens.evaluate_all("ts => ts.filter(t => t.classList.contains('surprise')).map(t => t.textContent)")
    starts = sorted({s for w in worst for s in surprise[w][1]})
    assert marked == [t["text"] for t in scored["tokens"] if t["start"] in starts]
    shot(page, "score", tmp_path)


def test_search_a_source_and_open_the_document(page, sync_api, servers, tmp_path) -> None:
    expect = sync_api.expect
    page.locator("#q").fill("saith the Lord")
    page.locator("#q").press("Enter")
    hits = httpx.get(servers[0] + "/v1/londinium/search", params={"q": "saith the Lord", "k": 10}, headers=AUTH, timeout=60).json()["hits"]
    first = page.locator("#hits li").first
    expect(first.locator("h3")).to_have_text(hits[0]["title"] or hits[0]["id"])
    expect(first.locator(".meta")).to_contain_text(f"source {hits[0]['source']}, period unknown, {hits[0]['split']} split")
    assert page.locator("#hits li").count() == len(hits)
    assert first.locator(".snippet mark").count() == len(hits[0]["matches"])
    first.locator("button").click()
    dialog = page.locator("#doc-dialog")
    expect(dialog).to_be_visible()
    doc = httpx.get(servers[0] + "/v1/londinium/document", params={"id": hits[0]["id"]}, headers=AUTH, timeout=60).json()
    expect(page.locator("#doc-snippet")).to_have_text(hits[0]["snippet"])
    assert page.locator("#doc-text").text_content() == doc["text"]
    shot(page, "sources", tmp_path)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(first.locator("button")).to_be_focused()  # back where the reader was


def test_the_model_view_renders_the_report_card_with_its_plots(page, sync_api, servers, tmp_path) -> None:
    expect = sync_api.expect
    page.locator("#tab-model").click()
    details = httpx.get(servers[0] + "/v1/londinium/model", headers=AUTH, timeout=60).json()
    expect(page.locator("#model-facts")).to_contain_text(f"{details['parameters']:,}")
    expect(page.locator("#model-facts")).to_contain_text(f"{details['training_tokens']:,}")
    page.locator("#report-buttons button", has_text="Report card").click()
    report = page.locator("#report")
    expect(report.locator("h2").first).to_have_text(f"Evaluation report: run {RUN}")
    assert report.locator("table").count() >= 2
    plots = report.locator("img")
    expect(plots).to_have_count(2)
    for i in range(2):
        expect(plots.nth(i)).to_have_attribute("src", re.compile("^blob:"))
        assert plots.nth(i).evaluate("img => img.decode().then(() => img.naturalWidth)") > 100  # a PNG, decoded
    shot(page, "model", tmp_path)
    missing = page.locator("#report-buttons button", has_text="Data card")
    expect(missing).to_have_attribute("aria-disabled", "true")
    missing.focus()  # still reachable by keyboard (aria-disabled, not disabled), to say what makes it
    page.keyboard.press("Enter")
    expect(report).to_contain_text("This server has no data card: run `londinium corpus build`.")
    page.locator("#report-buttons button", has_text="Model card").click()
    expect(report.locator("h2").first).to_have_text(f"{RUN}, step 20")


def test_compare_two_models_on_two_servers(page, sync_api, servers, tmp_path) -> None:
    expect = sync_api.expect
    page.locator("#tab-compare").click()
    sampling(page, seed=SEED, max_tokens=40)
    page.locator("#side-b-base").fill(servers[1] + "/v1")
    page.locator("#side-b-base").press("Tab")  # a change of server lists its models
    expect(page.locator("#side-b-model option")).to_have_text([OTHER])
    expect(page.locator("#side-a-model option")).to_have_text([RUN])
    hint = httpx.get(servers[0] + "/v1/londinium/model", headers=AUTH, timeout=60).json()["prompt_hint"]
    expect(page.locator("#compare-prompt")).to_have_value(hint)  # the corpus's own example, not "Thou art"
    page.locator("#compare-form button[type=submit]").click()
    for side, url, model in (("a", servers[0], RUN), ("b", servers[1], OTHER)):
        body = {"model": model, "prompt": hint, "max_tokens": 40, "seed": SEED}
        want = httpx.post(url + "/v1/completions", json=body, headers=AUTH, timeout=60).json()["choices"][0]["text"]
        result = page.locator(f"#result-{side}")
        expect(result).to_have_text(want, timeout=60_000)
        expect(page.locator(f"#result-{side}-title")).to_contain_text(f"{model} at {url}/v1")
        assert result.locator(".tok").count() > 0
    shot(page, "compare", tmp_path)
    page.locator("#side-b-base").fill(f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    page.locator("#side-b-base").press("Tab")
    expect(page.locator("#error")).to_contain_text("could not reach")
    expect(page.locator("#error")).to_contain_text("serve.allowed_origins")


def test_an_answer_from_the_corpus_cites_passages_that_open_at_the_quote(page, sync_api, servers, ws, tmp_path) -> None:
    """The `+rag` alias from the chat view: the reply and its citations are the API's for the same
    request; Enter on a citation opens its document with the quoted span marked; a question the
    corpus does not support is refused."""
    from londinium.config import load_config
    from londinium.retrieve.retriever import Retriever

    expect = sync_api.expect
    page.locator("#tab-chat").click()
    page.locator("#clear").click()
    sampling(page, seed=SEED, max_tokens=8)
    doc = next(d for d in Retriever.load(ws, load_config()).index.documents if d.split == "val")
    question = " ".join(doc.text.split()[:6])  # short: the model's context (128) must hold the passages too
    page.locator("#rag").check()
    page.locator("#prompt").fill(question)
    page.locator("#prompt").press("Enter")
    body = {"model": f"{RUN}+rag", "messages": [{"role": "user", "content": question}], "max_tokens": 8, "seed": SEED,
            "logprobs": True, "top_logprobs": 5, "n": 1}
    want = httpx.post(servers[0] + "/v1/chat/completions", json=body, headers=AUTH, timeout=60).json()
    assert want["refused"] is False and want["citations"]
    reply = page.locator("#messages .msg.assistant").last
    expect(reply).to_have_attribute("aria-busy", "false", timeout=60_000)
    expect(reply.locator(".tokens")).to_have_text(want["choices"][0]["message"]["content"])
    buttons = reply.locator("button.citation")
    expect(buttons).to_have_text([f"[{c['n']}] {c['title'] or c['id']}" for c in want["citations"]])
    assert reply.locator(".citations q").all_text_contents() == [c["quote"] for c in want["citations"]]
    cited = want["citations"][0]
    first = page.get_by_role("button", name=f"[{cited['n']}] {cited['title'] or cited['id']}: open the document at the quoted passage")
    first.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#doc-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#doc-snippet")).to_have_text(cited["quote"])
    text = httpx.get(servers[0] + "/v1/londinium/document", params={"id": cited["id"]}, headers=AUTH, timeout=60).json()["text"]
    assert page.locator("#doc-text").text_content() == text and text[cited["start"]:cited["end"]] == cited["quote"]
    assert page.locator("#doc-snippet").evaluate("m => getComputedStyle(m).backgroundColor") == "rgb(255, 224, 102)"  # highlighted
    shot(page, "citations", tmp_path)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(first).to_be_focused()

    page.locator("#prompt").fill("How does a lithium-ion battery store electric charge?")
    page.locator("#prompt").press("Enter")
    refused = page.locator("#messages .msg.assistant").last
    expect(refused).to_contain_text("Refused: no passage of the corpus supports an answer", timeout=60_000)
    expect(refused.locator("button.citation")).to_have_count(0)
    page.locator("#rag").uncheck()
    page.locator("#clear").click()


def test_keyboard_only_in_a_narrow_window(chromium, sync_api, servers, tmp_path) -> None:
    expect, errors = sync_api.expect, []
    page = open_page(chromium, sync_api, servers[0], errors, viewport={"width": 400, "height": 800})
    try:
        expect(page.locator("#key-input")).to_be_focused()
        page.keyboard.type(KEY)
        page.keyboard.press("Enter")
        expect(page.locator("#model-line")).to_contain_text("parameters")
        assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        tree = page.locator("body").aria_snapshot()  # what a screen reader is given: every control named
        for line in ('tablist "Views"', 'tab "Chat" [selected]', 'textbox "Your message"', 'button "Send"',
                     'complementary "Sources"', 'searchbox "Search the corpus"', 'log "Conversation"'):
            assert line in tree, (line, tree)
        main, aside = page.locator("main").bounding_box(), page.locator("aside").bounding_box()
        assert aside["y"] >= main["y"] + main["height"] - 1  # the sources go under the views
        focused = []
        for _ in range(3):
            page.keyboard.press("Tab")
            focused.append(page.evaluate("() => document.activeElement.textContent.trim()"))
        assert focused == ["Skip to the playground", "API key", "Chat"]
        page.keyboard.press("ArrowRight")
        expect(page.locator("#tab-score")).to_be_focused()
        expect(page.locator("#view-score")).to_be_visible()
        page.keyboard.press("Tab")
        expect(page.locator("#score-text")).to_be_focused()
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")  # the Score button
        expect(page.locator("#score-summary")).to_contain_text("bits per byte")
        shot(page, "narrow", tmp_path, full_page=True)
        assert errors == []
    finally:
        page.context.close()


def focus_ring(page) -> float:
    """The width in pixels of the focused element's outline (0 when it has none): the visible focus."""
    return page.evaluate("""() => { const s = getComputedStyle(document.activeElement);
        return s.outlineStyle === 'none' ? 0 : parseFloat(s.outlineWidth); }""")


def test_main_flows_with_the_keyboard_alone(chromium, sync_api, servers, tmp_path) -> None:
    """Tab order through the chat view and the sources, each control found by its role and
    accessible name (get_by_role fails on a missing name) with a visible focus ring; Enter sends;
    the token alternatives open on focus; Escape closes the tooltip, the settings, the chat
    template and the document; Compare run from the keyboard."""
    expect, errors = sync_api.expect, []
    page = open_page(chromium, sync_api, servers[0], errors)
    role = page.get_by_role
    try:
        expect(page.locator("#key-input")).to_be_focused()
        page.keyboard.type(KEY)
        page.keyboard.press("Enter")
        expect(page.locator("#model-line")).to_contain_text("parameters")
        expect(role("checkbox", name="Answer from the corpus")).to_be_enabled()  # the workspace has an index
        order = [role("link", name="Skip to the playground"), role("button", name="API key"), role("tab", name="Chat"),
                 role("radio", name="Chat (messages through the chat template)"),
                 role("checkbox", name="Answer from the corpus, with citations"),
                 role("textbox", name="System prompt"), role("textbox", name="Your message"), role("button", name="Send"),
                 # Stop is disabled while nothing runs: not a stop
                 role("button", name="Clear the conversation"), role("button", name="Show the prompt the model sees"),
                 page.locator("#settings > summary"),
                 role("searchbox", name="Search the corpus"), role("button", name="Search", exact=True)]
        for i, control in enumerate(order):
            page.keyboard.press("Tab")
            expect(control).to_be_focused()
            assert focus_ring(page) >= 2, f"Tab stop {i}: no visible focus ring"
        assert "Sampling settings" in page.locator("#settings").aria_snapshot()

        # Chat: Shift+Tab back to the message, Enter sends; the reply is one stop before the message box.
        for _ in range(6):  # the search box, the settings, Show the prompt, Clear, Send, the message
            page.keyboard.press("Shift+Tab")
        expect(role("textbox", name="Your message")).to_be_focused()
        page.keyboard.type("Good morrow")
        page.keyboard.press("Shift+Enter")  # a new line, not a send
        expect(page.locator("#prompt")).to_have_value("Good morrow\n")
        page.keyboard.press("Backspace")
        page.keyboard.press("Enter")
        reply = page.locator("#messages .msg.assistant")
        expect(reply).to_have_attribute("aria-busy", "false", timeout=60_000)
        page.keyboard.press("Shift+Tab")
        token = reply.locator(".tok").first
        expect(token).to_be_focused()
        assert focus_ring(page) >= 2
        tip = page.locator("#token-tip")
        expect(tip).to_be_visible()
        expect(tip.get_by_role("list", name="Top alternatives")).to_be_visible()
        page.keyboard.press("ArrowRight")
        expect(reply.locator(".tok").nth(1)).to_be_focused()
        expect(tip).to_be_visible()
        page.keyboard.press("Escape")
        expect(tip).to_be_hidden()
        expect(reply.locator(".tok").nth(1)).to_be_focused()

        # The chat template: Enter shows it, Escape hides it and leaves the focus on its button.
        page.keyboard.press("Tab")  # the message box
        page.keyboard.press("Tab")  # Send
        page.keyboard.press("Tab")  # Clear
        page.keyboard.press("Tab")
        show = role("button", name="Show the prompt the model sees")
        expect(show).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#prompt-view")).to_be_visible()
        expect(show).to_have_attribute("aria-expanded", "true")
        page.keyboard.press("Escape")
        expect(page.locator("#prompt-view")).to_be_hidden()
        expect(show).to_have_attribute("aria-expanded", "false")
        expect(show).to_be_focused()

        # The sampling settings open with Enter, their fields come next, Escape closes them.
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        expect(page.locator("#settings")).to_have_attribute("open", "")
        page.keyboard.press("Tab")
        expect(role("spinbutton", name="Max tokens")).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.locator("#settings")).not_to_have_attribute("open", "")
        expect(page.locator("#settings > summary")).to_be_focused()

        # Sources: search with Enter, open a hit with Enter, Escape back to it.
        page.keyboard.press("Tab")
        expect(role("searchbox", name="Search the corpus")).to_be_focused()
        page.keyboard.type("saith the Lord")
        page.keyboard.press("Enter")
        opener = page.locator("#hits li button").first
        expect(opener).to_be_visible()
        page.keyboard.press("Tab")  # the Search button
        page.keyboard.press("Tab")
        expect(opener).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#doc-dialog")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#doc-dialog")).to_be_hidden()
        expect(opener).to_be_focused()

        # Compare, from the tabs: arrow keys to the view, Tab to its prompt (the corpus's example), on to its button.
        for _ in range(40):
            if page.evaluate("() => document.activeElement.id") == "tab-chat":
                break
            page.keyboard.press("Shift+Tab")
        page.keyboard.press("End")
        expect(role("tab", name="Compare")).to_be_focused()
        expect(page.locator("#view-compare")).to_be_visible()
        page.keyboard.press("Tab")
        expect(role("textbox", name="Prompt, sent to both")).to_be_focused()
        expect(page.locator("#compare-prompt")).not_to_have_value("")
        for control in (role("radio", name="a completion prompt"), role("textbox", name="Server (its /v1 URL)").first,
                        role("combobox", name="Model").first, role("textbox", name="API key of that server").first):
            page.keyboard.press("Tab")
            expect(control).to_be_focused()
        for _ in range(3):
            page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        expect(role("button", name="Compare", exact=True)).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#result-a .tok").first).to_be_visible(timeout=60_000)
        expect(page.locator("#result-b .tok").first).to_be_visible(timeout=60_000)
        assert errors == []
    finally:
        page.context.close()


def test_every_text_on_the_page_meets_wcag_contrast(page) -> None:
    """Each visible element's own text colour against the background it is drawn on (the nearest
    opaque one), as Chromium computes them, in every view after the tests above filled them: 4.5:1 or more."""
    failures = []
    for tab in ("#tab-chat", "#tab-score", "#tab-model", "#tab-compare"):
        page.locator(tab).click()
        failures += page.evaluate(CONTRAST_JS)
    assert failures == [], failures


CONTRAST_JS = """() => {
  const rgba = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const ground = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.checkVisibility() || el.closest(".visually-hidden")) continue;
    const fg = rgba(getComputedStyle(el).color);
    const r = ratio(fg.slice(0, 3), ground(el));
    if (r < 4.5) out.push(`${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${el.className}: ${r.toFixed(2)}:1`);
  }
  return out;
}"""
