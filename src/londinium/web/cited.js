// Answers from the corpus: a chat request to the server's `<model>+rag` alias (docs/rag.md), not
// streamed (the server refuses to: the citations need the whole answer). Its reply carries
// `refused` and `citations` beside the choices; each citation is a button that opens the cited
// document with the quoted span marked.

import { h } from "./dom.js";
import { requestBody } from "./generate.js";
import { openPassage } from "./sources.js";
import { fromChat } from "./tokens.js";

export const RAG_SUFFIX = "+rag";

// {refused, citations, choices: [{text, tokens, finish}]}, choices in streamReply's shape.
export async function groundedReply(api, model, messages, settings, signal) {
  const body = requestBody("chat", `${model}${RAG_SUFFIX}`, messages, settings);
  const reply = await api.json("/chat/completions", { method: "POST", body, signal });
  return {
    refused: reply.refused === true,
    citations: reply.citations || [],
    choices: reply.choices.map((c) => ({
      text: (c.message && c.message.content) || "",
      tokens: fromChat(c.logprobs && c.logprobs.content),
      finish: c.finish_reason,
    })),
  };
}

// The citations as a list: "[n] title" (a button to the passage) and the quote. A citation the
// server could not find in the corpus (`valid` false) is shown, said so, and opens nothing.
export function citationList(page, citations) {
  return h("section", { className: "citations", "aria-label": "Cited passages" },
    h("h4", {}, citations.length === 1 ? "The passage it cites" : `The ${citations.length} passages it cites`),
    h("ol", {}, ...citations.map((c) => {
      const name = `[${c.n}] ${c.title || c.id}`;
      let head;
      if (c.valid) {
        head = h("button", { type: "button", className: "citation", "aria-label": `${name}: open the document at the quoted passage` }, name);
        head.addEventListener("click", () => openPassage(page, c.id, c.start, c.end));
      } else {
        head = h("span", { className: "citation-missing" }, `${name} (not found in the corpus)`);
      }
      return h("li", {}, head, " ", h("q", {}, c.quote));
    })));
}
