// Unit tests of the playground's JavaScript, run in the same Chromium as the page tests
// (tests/browser/test_playground.py serves this page and reads window.results).

import { SSEParser, jsonEvents } from "/web/sse.js";
import { BINS, align, bin, fromChat, fromCompletion, percent, surprisingWords } from "/web/tokens.js";
import { renderMarkdown } from "/web/markdown.js";
import { renderTokens } from "/web/tokenview.js";
import { citationList } from "/web/cited.js";

const results = [];
const cases = [];
const test = (name, fn) => cases.push([name, fn]);

function eq(actual, expected, what = "") {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what} expected ${e}, got ${a}`);
}

function ok(condition, what) {
  if (!condition) throw new Error(what);
}

function parseAll(chunks) {
  const p = new SSEParser();
  return chunks.flatMap((c) => p.push(c));
}

function bytesStream(bytes, cuts) {
  return new ReadableStream({
    start(controller) {
      let at = 0;
      for (const cut of [...cuts, bytes.length]) {
        controller.enqueue(bytes.slice(at, cut));
        at = cut;
      }
      controller.close();
    },
  });
}

function html(fragment) {
  const div = document.createElement("div");
  div.append(fragment);
  return div;
}

// ---- the SSE parser ------------------------------------------------------------------------------

const STREAM = 'data: {"a":1}\n\n: keep-alive\n\nevent: note\ndata: line one\ndata: line two\n\ndata:{"b":"x"}\n\ndata: [DONE]\n\n';
const EVENTS = [
  { event: "message", data: '{"a":1}' },
  { event: "note", data: "line one\nline two" },
  { event: "message", data: '{"b":"x"}' },
  { event: "message", data: "[DONE]" },
];

test("sse: a whole stream gives its events, comments skipped, data lines joined", () => {
  eq(parseAll([STREAM]), EVENTS);
});

test("sse: a stream cut into chunks anywhere gives the same events", () => {
  for (let size = 1; size < 12; size++) {
    const chunks = [];
    for (let i = 0; i < STREAM.length; i += size) chunks.push(STREAM.slice(i, i + size));
    eq(parseAll(chunks), EVENTS, `chunks of ${size}:`);
  }
});

test("sse: CRLF and CR line ends, even with CR and LF in two chunks", () => {
  eq(parseAll([STREAM.replace(/\n/g, "\r\n")]), EVENTS, "CRLF:");
  eq(parseAll([STREAM.replace(/\n/g, "\r")]), EVENTS, "CR:");
  eq(parseAll(['data: {"a":1}\r', "\n\r", "\n"]), [{ event: "message", data: '{"a":1}' }], "split CRLF:");
});

test("sse: an unfinished event is not given until its blank line", () => {
  const p = new SSEParser();
  eq(p.push('data: {"a"'), []);
  eq(p.push(":1}\n"), []);
  eq(p.push("\n"), [{ event: "message", data: '{"a":1}' }]);
});

test("sse: jsonEvents decodes UTF-8 cut inside a character and stops at [DONE]", async () => {
  const text = 'data: {"t":"é—🙂"}\n\ndata: {"t":"ſ"}\n\ndata: [DONE]\n\ndata: {"t":"after"}\n\n';
  const bytes = new TextEncoder().encode(text);
  const cuts = [];
  for (let i = 3; i < bytes.length; i += 3) cuts.push(i); // cuts land inside the multi-byte characters
  const got = [];
  for await (const payload of jsonEvents(bytesStream(bytes, cuts))) got.push(payload.t);
  eq(got, ["é—🙂", "ſ"]);
});

test("sse: an error event after the 200 is thrown with the server's message", async () => {
  const text = 'data: {"x":1}\n\ndata: {"error":{"message":"the server is shutting down","code":"shutting_down"}}\n\ndata: [DONE]\n\n';
  let caught = null;
  try {
    for await (const _ of jsonEvents(bytesStream(new TextEncoder().encode(text), []))) { /* drain */ }
  } catch (e) {
    caught = e;
  }
  ok(caught && caught.message === "the server is shutting down" && caught.code === "shutting_down", `caught ${caught}`);
});

// ---- tokens and probabilities ----------------------------------------------------------------------

test("tokens: bins follow the legend's bounds, -Infinity is the least likely", () => {
  eq([0.9, 0.5, 0.49, 0.2, 0.19, 0.05, 0.049, 0.01, 0.0099, 0].map((p) => bin(Math.log(p))), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
  eq(bin(-Infinity), BINS.length - 1);
  eq(bin(0), 0);
});

test("tokens: percentages keep small probabilities apart", () => {
  eq([0.42, 0.031, 0.00042, 0.0000001, 1].map(percent), ["42%", "3.1%", "0.042%", "<0.001%", "100%"]);
});

test("tokens: chat bytes decoded in order: a character split over two tokens goes whole to the second", () => {
  const e = [...new TextEncoder().encode("é")];
  const tokens = fromChat([
    { token: "caf", logprob: -1, bytes: [...new TextEncoder().encode("caf")], top_logprobs: [] },
    { token: "\ufffd", logprob: -2, bytes: [e[0]], top_logprobs: [] },
    { token: "\ufffd", logprob: -3, bytes: [e[1]], top_logprobs: [{ token: "x", logprob: -0.5 }] },
  ]);
  eq(tokens.map((t) => t.piece), ["caf", "", "é"]);
  eq(tokens[2].top, [{ token: "x", logprob: -0.5 }]);
  eq(align("café", tokens).map((s) => [s.text, s.token && s.token.logprob]), [["caf", -1], ["é", -3]]);
});

test("tokens: completion alternatives come sorted, most likely first", () => {
  const [t] = fromCompletion({ tokens: [" Lord"], token_logprobs: [-1.2], top_logprobs: [{ " King": -2, " Lord": -1.2, " sea": -0.9 }], text_offset: [0] });
  eq(t.top.map((a) => a.token), [" sea", " Lord", " King"]);
});

test("tokens: align drops tokens after the text (a held-back stop string) and cuts the last", () => {
  const tokens = ["Thus", " saith", " the", "\n\n", "END"].map((piece, i) => ({ piece, logprob: -i }));
  eq(align("Thus saith the", tokens).map((s) => s.text), ["Thus", " saith", " the"]);
  eq(align("Thus saith th", tokens).map((s) => [s.text, s.token.piece]), [["Thus", "Thus"], [" saith", " saith"], [" th", " the"]]);
  eq(align("Thus said", tokens).map((s) => [s.text, s.token && s.token.piece]), [["Thus", "Thus"], [" said", null]]);
  eq(align("", tokens), []);
});

test("tokens: aligned segments always join to exactly the text", () => {
  const text = "Thus saith the Lord; ſweet café 🙂.";
  for (let seed = 1; seed < 40; seed++) {
    const tokens = [];
    let at = 0;
    let r = seed;
    while (at < text.length) {
      r = (r * 16807) % 2147483647;
      const n = 1 + (r % 5);
      tokens.push({ piece: text.slice(at, at + n), logprob: -1 });
      at += n;
    }
    eq(align(text, tokens).map((s) => s.text).join(""), text, `seed ${seed}:`);
  }
});

test("tokens: surprising words add the surprise of their tokens, most surprising first", () => {
  const text = "Thus saith the Lord.";
  const tokens = [["T", 0, -5], ["hus", 1, -1], [" saith", 4, -3], [" the", 10, -0.1], [" Lord", 14, -2], [".", 19, -0.2]]
    .map(([piece, start, logprob]) => ({ piece, start, logprob }));
  const words = surprisingWords(text, tokens, 2);
  eq(words.map((w) => [w.word, w.start, w.end, w.tokens]), [["Thus", 0, 4, [0, 1]], ["saith", 5, 10, [2]]]);
  ok(Math.abs(words[0].bits - 6 / Math.LN2) < 1e-9, `bits ${words[0].bits}`);
  ok(Math.abs(words[1].probability - Math.exp(-3)) < 1e-12, "probability");
});

test("tokenview: one tab stop, arrow keys move it, the tooltip shows probability and alternatives", () => {
  const box = document.getElementById("scratch");
  const tokens = [{ piece: "Thus", logprob: Math.log(0.6), top: [{ token: "Thus", logprob: Math.log(0.6) }, { token: "The", logprob: Math.log(0.3) }] },
    { piece: " saith", logprob: Math.log(0.004), top: [] }];
  renderTokens(box, align("Thus saith", tokens));
  const spans = [...box.querySelectorAll(".tok")];
  eq(spans.map((s) => [s.textContent, s.className, s.tabIndex]), [["Thus", "tok p0", 0], [" saith", "tok p4", -1]]);
  spans[0].focus();
  const tip = document.getElementById("token-tip");
  ok(!tip.hidden && tip.getAttribute("role") === "tooltip" && spans[0].getAttribute("aria-describedby") === "token-tip", "tooltip on focus");
  eq([...tip.querySelectorAll("li")].map((li) => li.textContent), ["Thus 60%", "The 30%"]);
  spans[0].dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
  eq([document.activeElement === spans[1], spans[0].tabIndex, spans[1].tabIndex], [true, -1, 0]);
  ok(tip.textContent.includes("0.40%"), tip.textContent);
  box.replaceChildren();
});

// ---- the Markdown renderer ---------------------------------------------------------------------------

test("markdown: HTML in the text is shown as text, never run or parsed", () => {
  const div = html(renderMarkdown('<script>alert(1)</script>\n\nHi <img src=x onerror="alert(2)"> **<b>bold</b>**\n\n| a |\n|---|\n| <iframe src="x"></iframe> |'));
  eq([...div.querySelectorAll("script, img, iframe, b")].length, 0, "elements:");
  ok(div.textContent.includes("<script>alert(1)</script>") && div.textContent.includes('<img src=x onerror="alert(2)">'), div.textContent);
  ok(div.querySelector("strong").textContent === "<b>bold</b>", div.innerHTML);
});

test("markdown: links only to http(s); images only where the page gives a URL", () => {
  const div = html(renderMarkdown("[a](javascript:alert(1)) [b](https://example.org/x) ![plot](loss.png) ![x](../../etc/passwd)",
    { image: (src) => (src === "loss.png" ? "blob:ok" : null) }));
  eq([...div.querySelectorAll("a")].map((a) => a.getAttribute("href")), ["https://example.org/x"]);
  eq([...div.querySelectorAll("img")].map((i) => [i.getAttribute("src"), i.alt]), [["blob:ok", "plot"]]);
  ok(div.textContent.includes("[image: x]") && div.textContent.includes("a"), div.textContent);
});

test("markdown: a report's blocks (front matter, headings, tables with alignment, lists, quotes, details, code)", () => {
  const report = [
    "---", "library_name: \"transformers\"", "---", "",
    "# Evaluation report: run `main`", "",
    "checkpoint `step-000300` (step 300); *T = 0:* and **all** of it, snake_case_names stay.", "",
    "| source | docs | bits/byte |", "|---|---:|:---:|", "| **all** | 64 | 2.528 |", "| a<br>b | 1 | x \\| y |", "",
    "- one", "- two", "  continued", "",
    "> KING HENRY.", "> My lords, look", "",
    "<details><summary>Probes the model got wrong</summary>", "", "| probe | rank |", "|---|---|", "| kjv | 2 |", "", "</details>", "",
    "```", "<b>not bold</b>", "```", "", "---", "Time: 1 s.",
  ].join("\n");
  const div = html(renderMarkdown(report, { headingOffset: 1 }));
  eq(div.querySelector("details summary").textContent, "Front matter");
  eq(div.querySelector("h2").textContent, "Evaluation report: run main");
  eq(div.querySelector("h2 code").textContent, "main");
  eq([...div.querySelectorAll("p em, p strong")].map((e) => e.textContent), ["T = 0:", "all"]);
  ok(div.textContent.includes("snake_case_names"), "snake_case kept");
  const table = div.querySelector("table");
  eq([...table.querySelectorAll("th")].map((th) => [th.textContent, th.className]), [["source", ""], ["docs", "align-right"], ["bits/byte", "align-center"]]);
  eq([...table.querySelectorAll("tbody tr")].map((tr) => [...tr.children].map((td) => td.textContent)), [["all", "64", "2.528"], ["ab", "1", "x | y"]]);
  eq(table.querySelectorAll("tbody td br").length, 1);
  eq([...div.querySelectorAll("ul li")].map((li) => li.textContent), ["one", "two continued"]);
  eq(div.querySelector("blockquote").querySelectorAll("br").length, 1);
  const details = [...div.querySelectorAll("details")][1];
  eq(details.querySelector("summary").textContent, "Probes the model got wrong");
  ok(details.querySelector("table"), "the table inside <details>");
  eq(div.querySelector("pre code").textContent, "<b>not bold</b>");
  eq(div.querySelectorAll("hr").length, 1);
  eq(div.lastElementChild.textContent, "Time: 1 s.");
});

test("citations: a checked one is a button named for what it opens; an unchecked one opens nothing; quotes are text", () => {
  const list = citationList({}, [
    { n: 1, id: "kjv/gen", title: "Genesis", start: 10, end: 30, quote: "In the beginning <b>God</b>", valid: true },
    { n: 2, id: "gone/1", title: "", start: 0, end: 5, quote: "Lost.", valid: false },
  ]);
  eq(list.querySelector("h4").textContent, "The 2 passages it cites");
  const buttons = [...list.querySelectorAll("button")];
  eq(buttons.map((b) => [b.textContent, b.getAttribute("aria-label"), b.type]),
    [["[1] Genesis", "[1] Genesis: open the document at the quoted passage", "button"]]);
  eq(list.querySelector("li:nth-child(2)").textContent, "[2] gone/1 (not found in the corpus) Lost.");
  eq([...list.querySelectorAll("q")].map((q) => q.textContent), ["In the beginning <b>God</b>", "Lost."]);
  eq(list.querySelectorAll("b").length, 0);
});

// ---- run them all ------------------------------------------------------------------------------------

for (const [name, fn] of cases) {
  try {
    await fn();
    results.push({ name, ok: true });
  } catch (e) {
    results.push({ name, ok: false, error: String((e && e.stack) || e) });
  }
}
window.results = results;
document.body.dataset.done = "yes";
