// Chat and completion against this server: streamed replies, each token coloured by probability.

import { citationList, groundedReply } from "./cited.js";
import { h } from "./dom.js";
import { requestBody, streamReply } from "./generate.js";
import { align } from "./tokens.js";
import { renderTokens } from "./tokenview.js";

const $ = (id) => document.getElementById(id);

export function setupChat(page) {
  const form = $("chat-form");
  const log = $("messages");
  const history = []; // {role, content}: the conversation so far (the first choice of each reply)
  let running = null; // AbortController of the request in flight

  const mode = () => form.querySelector("input[name=mode]:checked").value;

  function messages(next) {
    const system = $("system").value.trim();
    return [...(system ? [{ role: "system", content: system }] : []), ...history, ...(next ? [{ role: "user", content: next }] : [])];
  }

  function say(who, text, className) {
    const article = h("article", { className: `msg ${className}` }, h("h3", { className: "who" }, who), h("p", { className: "text" }, text));
    log.append(article);
    return article;
  }

  function replyBox(index, count) {
    const tokens = h("div", { className: "tokens", role: "group", "aria-label": `Reply${count > 1 ? ` ${index + 1}` : ""}, token by token` });
    const meta = h("p", { className: "meta" });
    const article = h("article", { className: "msg assistant", "aria-busy": "true" },
      h("h3", { className: "who" }, count > 1 ? `${page.model}, choice ${index + 1} of ${count}` : page.model), tokens, meta);
    log.append(article);
    return { article, tokens, meta };
  }

  async function send() {
    const text = $("prompt").value;
    if (!text.trim() || running || !page.model) return;
    page.clearError();
    const asChat = mode() === "chat";
    const settings = page.settings();
    const input = asChat ? messages(text) : text;
    say(asChat ? "You" : "Prompt", text, asChat ? "user" : "prompt");
    const boxes = [];
    running = new AbortController();
    $("send").disabled = true;
    $("stop").disabled = false;
    let choices = [];
    const draw = (update) => update.forEach((choice, i) => {
      if (!choice) return;
      boxes[i] ||= replyBox(i, settings.n || 1);
      renderTokens(boxes[i].tokens, align(choice.text, choice.tokens));
    });
    let grounded = null; // an answer from the corpus: {refused, citations}
    try {
      if (asChat && $("rag").checked) {
        grounded = await groundedReply(page.api, page.model, input, settings, running.signal);
        choices = grounded.choices;
        draw(choices);
      } else {
        const how = asChat ? "chat" : "completion";
        choices = await streamReply(page.api, how, requestBody(how, page.model, input, settings), running.signal, draw);
      }
      choices.forEach((c, i) => c && boxes[i] && (boxes[i].meta.textContent = grounded && grounded.refused
        ? "Refused: no passage of the corpus supports an answer to this." : finished(c)));
      if (grounded && !grounded.refused) boxes.forEach((b) => b.article.append(citationList(page, grounded.citations)));
      if (asChat) history.push({ role: "user", content: text }, { role: "assistant", content: (choices[0] && choices[0].text) || "" });
      $("prompt").value = "";
    } catch (e) {
      if (e.name === "AbortError") boxes.forEach((b) => b && (b.meta.textContent = "Stopped."));
      else page.fail(e);
    } finally {
      boxes.forEach((b) => b && b.article.setAttribute("aria-busy", "false"));
      running = null;
      $("send").disabled = false;
      $("stop").disabled = true;
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { // Shift+Enter: a new line
      e.preventDefault();
      send();
    }
  });
  // Retrieval-augmented answers are chat requests, and need the corpus index.
  const ragAllowed = () => mode() === "chat" && !(page.details && page.details.search && page.details.search.available === false);
  const syncRag = () => {
    $("rag").disabled = !ragAllowed();
    if ($("rag").disabled) $("rag").checked = false;
  };
  form.addEventListener("change", syncRag);
  document.addEventListener("londinium:details", syncRag);
  $("view-chat").addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("prompt-view").hidden) {
      e.preventDefault(); // closed here: the template's <details> inside stays as it was
      closePrompt();
      $("show-prompt").focus();
    }
  });
  $("stop").addEventListener("click", () => running && running.abort());
  $("clear").addEventListener("click", () => {
    history.length = 0;
    log.replaceChildren();
    $("prompt").focus();
  });
  $("show-prompt").addEventListener("click", () => showPrompt(page, messages($("prompt").value.trim()), mode() === "chat"));
}

function finished(choice) {
  const why = { stop: "it ended its text or met a stop sequence", length: "it reached max tokens" }[choice.finish] || choice.finish || "unknown";
  return `${choice.tokens.length} tokens; stopped because ${why}.`;
}

function closePrompt() {
  $("prompt-view").hidden = true;
  $("show-prompt").setAttribute("aria-expanded", "false");
}

// The prompt text the chat template makes of the conversation (the server renders it: /v1/londinium/chat/prompt).
async function showPrompt(page, messages, asChat) {
  const button = $("show-prompt");
  const view = $("prompt-view");
  if (!view.hidden) return closePrompt();
  if (!asChat) {
    $("prompt-view-facts").textContent = "In completion mode the model sees your text as it is, with no template.";
    $("prompt-view-text").textContent = $("prompt").value;
    $("prompt-view-template").textContent = "";
  } else {
    try {
      const shown = messages.length ? messages : [{ role: "user", content: "" }];
      const r = await page.api.json("/londinium/chat/prompt", { method: "POST", body: { model: page.model, messages: shown } });
      $("prompt-view-facts").textContent = `${r.prompt_tokens} tokens; the model's reply follows the last line.`;
      $("prompt-view-text").textContent = r.prompt;
      $("prompt-view-template").textContent = r.template;
    } catch (e) {
      page.fail(e);
      return;
    }
  }
  view.hidden = false;
  button.setAttribute("aria-expanded", "true");
}
