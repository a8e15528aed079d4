// The model: its facts (/v1/londinium/model) and its reports (model card, report card, training
// curve, data card, tokenizer report), rendered from Markdown with their plots.

import { h } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const PLOT = /^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$/;

function facts(m) {
  const a = m.architecture || {};
  const rows = [
    ["Model", m.id],
    ["Parameters", m.parameters.toLocaleString("en")],
    ["Context", `${m.context} tokens`],
    ["Vocabulary", `${m.vocab_size} tokens`],
    ["Shape", a.n_layer ? `${a.n_layer} layers, ${a.n_embd} wide, ${a.n_head} heads; ${a.positions} positions, ${a.norm}, ${a.mlp}` : null],
    ["Run", m.run ? `${m.run}, ${m.checkpoint} (step ${m.step})` : null],
    ["Export", m.export],
    ["Training tokens", m.training_tokens ? m.training_tokens.toLocaleString("en") : null],
    ["Validation loss", m.val_loss !== null && m.val_loss !== undefined ? m.val_loss.toFixed(3) : null],
  ];
  for (const [split, v] of Object.entries((m.eval && m.eval.perplexity) || {})) {
    rows.push([`Bits per byte, ${split}`, `${v.bits_per_byte.toFixed(3)} (perplexity ${v.perplexity.toFixed(1)}, ${v.tokens.toLocaleString("en")} tokens)`]);
  }
  return rows.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]);
}

export function setupModel(page) {
  const article = $("report");
  const urls = []; // object URLs of the plots shown, released when another report replaces them

  async function open(report, button) {
    for (const b of document.querySelectorAll("#report-buttons button")) b.setAttribute("aria-pressed", String(b === button));
    urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
    if (!report.available) {
      article.replaceChildren(h("p", {}, `This server has no ${report.title.toLowerCase()}: ${report.hint}.`));
      return;
    }
    try {
      const text = await page.api.text(`/londinium/reports/${report.name}`);
      // Plots are fetched with the key (an <img> cannot send it) and shown as blob: URLs.
      const image = (src) => PLOT.test(src) ? page.api.blob(`/londinium/reports/${report.name}/${src}`).then((b) => {
        const u = URL.createObjectURL(b);
        urls.push(u);
        return u;
      }) : null;
      article.replaceChildren(renderMarkdown(text, { headingOffset: 1, image }));
      article.focus();
    } catch (e) {
      page.fail(e);
    }
  }

  async function load() {
    try {
      const { data } = await page.api.json("/londinium/reports");
      $("report-buttons").replaceChildren(...data.map((r) => {
        const b = h("button", { type: "button", "aria-pressed": "false" }, r.title);
        if (!r.available) {
          b.setAttribute("aria-disabled", "true");
          b.title = r.hint;
        }
        b.addEventListener("click", () => open(r, b));
        return b;
      }));
    } catch (e) {
      page.fail(e);
    }
  }

  const showFacts = () => page.details && $("model-facts").replaceChildren(...facts({ ...page.details, id: page.model }));
  document.addEventListener("londinium:details", showFacts);
  return () => {
    showFacts();
    load();
  };
}
