// A text scored token by token (/v1/londinium/score): bits per byte as the report card counts them,
// each token coloured by its probability, and the words that surprised the model most outlined.

import { h } from "./dom.js";
import { percent, surprisingWords } from "./tokens.js";
import { renderTokens } from "./tokenview.js";

const $ = (id) => document.getElementById(id);
// Outline at most 5 words, and no more than one word in four: in a short text every word would be "most surprising".
const surprising = (text) => Math.min(5, Math.max(1, Math.ceil((text.match(/\S+/g) || []).length / 4)));

export function setupScore(page) {
  // The example text is the served corpus's own (its profile's prompt_hint), unless one was typed.
  document.addEventListener("londinium:details", () => {
    if (!$("score-text").value) $("score-text").value = page.details.prompt_hint || "";
  });
  $("score-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    page.clearError();
    const text = $("score-text").value;
    let r;
    try {
      r = await page.api.json("/londinium/score", { method: "POST", body: { model: page.model, text } });
    } catch (err) {
      page.fail(err);
      return;
    }
    const tokens = r.tokens.map((t) => ({ piece: t.text, start: t.start, logprob: t.logprob, top: [] }));
    const words = surprisingWords(text, tokens, surprising(text));
    const marked = new Set(words.flatMap((w) => w.tokens));
    const segments = tokens.map((t) => ({ text: t.piece, token: t }));
    const shown = new Set([...marked].map((i) => segments.slice(0, i).filter((s) => s.text).length));
    renderTokens($("score-tokens"), segments.filter((s) => s.text), shown);
    const f = (x, d) => (x === null ? "n/a" : x.toFixed(d));
    $("score-summary").textContent = `${r.token_count} tokens, ${r.bytes} bytes: ${f(r.bits_per_byte, 3)} bits per byte ` +
      `(loss ${f(r.loss, 3)} nats per token, perplexity ${f(r.perplexity, 1)}).`;
    $("surprising").replaceChildren(...words.map((w) => h("li", {}, h("mark", {}, w.word),
      `: ${w.bits.toFixed(1)} bits (probability ${percent(w.probability)}), at character ${w.start}`)));
    $("surprises").hidden = !words.length;
  });
}
