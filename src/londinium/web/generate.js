// A chat or completion request built from the page's settings, streamed, with each choice's text
// and tokens (with log-probabilities) gathered as the chunks arrive.

import { fromChat, fromCompletion } from "./tokens.js";

const INTEGER = new Set(["max_tokens", "top_k", "seed", "n", "top_logprobs"]);

// The sampling settings panel as request fields; an empty field is left out (the server's default).
export function readSettings(panel) {
  const out = {};
  for (const input of panel.querySelectorAll("input")) {
    if (input.value.trim() === "") continue;
    const value = Number(input.value);
    out[input.name] = INTEGER.has(input.name) && Number.isInteger(value) ? value : Number.isNaN(value) ? input.value : value;
  }
  const stop = panel.querySelector("textarea[name=stop]").value.split("\n").filter((s) => s !== "")
    .map((s) => s.replace(/\\n/g, "\n").replace(/\\t/g, "\t"));
  if (stop.length) out.stop = stop;
  return out;
}

// The body of /v1/chat/completions (`input`: the messages) or /v1/completions (`input`: the prompt).
export function requestBody(mode, model, input, settings) {
  const { top_logprobs: alternatives = 5, ...sampling } = settings;
  if (mode === "chat") return { model, messages: input, ...sampling, logprobs: true, top_logprobs: alternatives };
  return { model, prompt: input, ...sampling, logprobs: alternatives };
}

// Stream the request; `onUpdate(choices)` after each chunk, choices[i] = {text, tokens, finish}.
export async function streamReply(api, mode, body, signal, onUpdate) {
  const choices = [];
  const path = mode === "chat" ? "/chat/completions" : "/completions";
  for await (const chunk of api.stream(path, body, signal)) {
    for (const c of chunk.choices || []) {
      const choice = (choices[c.index] ||= { text: "", tokens: [], raw: [], finish: null });
      if (mode === "chat") {
        choice.text += (c.delta && c.delta.content) || "";
        if (c.logprobs && c.logprobs.content) {
          choice.raw.push(...c.logprobs.content);
          choice.tokens = fromChat(choice.raw); // decoded whole: a character split across chunks joins up
        }
      } else {
        choice.text += c.text || "";
        if (c.logprobs) choice.tokens.push(...fromCompletion(c.logprobs));
      }
      if (c.finish_reason) choice.finish = c.finish_reason;
    }
    onUpdate(choices);
  }
  return choices;
}
