// Sources: the corpus search index beside the views. Each hit shows where it comes from (title,
// source, period, split, licence) and the passage that matched; "Open" shows the whole document
// with that passage marked.

import { h } from "./dom.js";

const $ = (id) => document.getElementById(id);

// The snippet with the matched words marked (`matches` are document offsets, the snippet starts at snippet_start).
export function markedSnippet(hit) {
  const out = [];
  let at = 0;
  for (const [start, end] of hit.matches || []) {
    const s = start - hit.snippet_start;
    const e = end - hit.snippet_start;
    if (s < at || e > hit.snippet.length) continue;
    out.push(hit.snippet.slice(at, s), h("mark", {}, hit.snippet.slice(s, e)));
    at = e;
  }
  out.push(hit.snippet.slice(at));
  return out.filter((x) => x !== "");
}

function provenance(d) {
  const period = d.period && d.period.length === 2 && d.period[0] ? (d.period[0] === d.period[1] ? `${d.period[0]}` : `${d.period[0]}-${d.period[1]}`) : "period unknown";
  return `source ${d.source}, ${period}, ${d.split} split; ${d.license || "licence unknown"}`;
}

// Show document `id` in the page's dialog with characters start:end marked and scrolled into view:
// a search hit's snippet, or the span an answer cites. Closing it (Escape, Close) returns the focus
// to what opened it (the dialog element does that).
export async function openPassage(page, id, start, end) {
  try {
    const doc = await page.api.json("/londinium/document", { query: { id } });
    $("doc-title").textContent = doc.title || doc.id;
    $("doc-provenance").textContent = `${doc.id}: ${provenance(doc)}, ${doc.chars.toLocaleString("en")} characters`;
    const mark = h("mark", { id: "doc-snippet" }, doc.text.slice(start, end));
    $("doc-text").replaceChildren(doc.text.slice(0, start), mark, doc.text.slice(end));
    $("doc-dialog").showModal();
    mark.scrollIntoView({ block: "center" });
  } catch (e) {
    page.fail(e);
  }
}

export function setupSources(page) {
  const note = $("search-note");
  const hits = $("hits");
  const dialog = $("doc-dialog");
  const open = (hit) => openPassage(page, hit.id, hit.snippet_start, hit.snippet_end);

  document.addEventListener("londinium:details", () => {
    const search = page.details.search || {};
    if (search.available === false) {
      note.textContent = search.error;
      for (const control of $("search-form").querySelectorAll("input, button")) control.disabled = true;
    }
  });
  $("doc-close").addEventListener("click", () => dialog.close());
  $("search-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    page.clearError();
    const q = $("q").value.trim();
    if (!q) return;
    note.textContent = "Searching…";
    let r;
    try {
      r = await page.api.json("/londinium/search", { query: { q, k: 10 } });
    } catch (err) {
      note.textContent = "";
      if (err.code === "no_search_index") note.textContent = err.message;
      else page.fail(err);
      return;
    }
    note.textContent = r.hits.length ? `${r.hits.length} documents match “${q}”, best first.` : `No document matches “${q}”.`;
    hits.replaceChildren(...r.hits.map((hit) => h("li", {},
      h("article", { className: "hit" },
        h("h3", {}, hit.title || hit.id),
        h("p", { className: "meta" }, `${provenance(hit)}; score ${hit.score.toFixed(2)}`),
        h("p", { className: "snippet" }, "…", ...markedSnippet(hit), "…"),
        (() => {
          const b = h("button", { type: "button", "aria-label": `Open the document: ${hit.title || hit.id}` }, "Open the document");
          b.addEventListener("click", () => open(hit));
          return b;
        })()))));
  });
}
