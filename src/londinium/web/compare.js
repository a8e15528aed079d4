// Compare: one prompt to two models side by side, each on any OpenAI-compatible server (this one,
// another `londinium serve`, a gateway). A server on another origin must allow this page's origin
// (serve.allowed_origins), or the browser keeps its answers from the page.

import { Api, sessionKey } from "./api.js";
import { h } from "./dom.js";
import { requestBody, streamReply } from "./generate.js";
import { align } from "./tokens.js";
import { renderTokens } from "./tokenview.js";

const $ = (id) => document.getElementById(id);

// One side's fields (server, model, key), made from the page's template with ids `<id>-base`, ...
function fields(id, title) {
  const fieldset = $("side-template").content.firstElementChild.cloneNode(true);
  fieldset.id = id;
  fieldset.querySelector("legend").textContent = title;
  for (const input of fieldset.querySelectorAll("[data-name]")) input.id = `${id}-${input.dataset.name}`;
  for (const label of fieldset.querySelectorAll("label[data-for]")) label.htmlFor = `${id}-${label.dataset.for}`;
  $("compare-sides").append(fieldset);
  return (name) => $(`${id}-${name}`);
}

function side(page, id, title) {
  const field = fields(id, title);
  const base = field("base");
  const select = field("model");
  const key = field("key");
  // This page's key goes only to this server; another server gets the key typed for it.
  const api = () => new Api(base.value, () => key.value || (new Api(base.value).sameOrigin ? sessionKey.get() : ""));
  async function models() {
    select.replaceChildren(h("option", { value: "" }, "loading…"));
    try {
      const { data } = await api().json("/models");
      select.replaceChildren(...data.map((m) => h("option", { value: m.id }, m.id)));
      return null;
    } catch (e) {
      select.replaceChildren(h("option", { value: "" }, "no models: see the error"));
      return e;
    }
  }
  base.addEventListener("change", () => models().then((e) => e && page.fail(e)));
  key.addEventListener("change", () => models().then((e) => e && page.fail(e)));
  return { id, base, select, api, models };
}

export function setupCompare(page) {
  const sides = [side(page, "side-a", "Left"), side(page, "side-b", "Right")];
  const results = [$("result-a"), $("result-b")];
  for (const s of sides) s.base.value = `${location.origin}/v1`;
  document.addEventListener("londinium:connected", () => sides.forEach((s) => s.models()));
  // The example prompt is the served corpus's own (its profile's prompt_hint), unless one was typed.
  document.addEventListener("londinium:details", () => {
    if (!$("compare-prompt").value) $("compare-prompt").value = page.details.prompt_hint || "";
  });

  $("compare-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    page.clearError();
    const prompt = $("compare-prompt").value;
    const mode = document.querySelector("input[name=compare-mode]:checked").value;
    const settings = { ...page.settings(), n: 1 };
    const input = mode === "chat" ? [{ role: "user", content: prompt }] : prompt;
    await Promise.all(sides.map(async (s, i) => {
      const section = results[i].closest("section");
      const error = section.querySelector(".side-error");
      error.textContent = "";
      section.querySelector("h3").textContent = `${i ? "Right" : "Left"}: ${s.select.value} at ${s.base.value}`;
      results[i].replaceChildren();
      section.setAttribute("aria-busy", "true");
      try {
        await streamReply(s.api(), mode, requestBody(mode, s.select.value, input, settings), undefined, (choices) => {
          if (choices[0]) renderTokens(results[i], align(choices[0].text, choices[0].tokens));
        });
      } catch (err) {
        error.textContent = err.message;
      } finally {
        section.setAttribute("aria-busy", "false");
      }
    }));
  });
}
