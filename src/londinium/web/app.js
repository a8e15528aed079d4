// The playground's start: the views (tabs), the API key, errors, and what every view shares.

import { Api, sessionKey } from "./api.js";
import { setupChat } from "./chat.js";
import { setupCompare } from "./compare.js";
import { h } from "./dom.js";
import { readSettings } from "./generate.js";
import { setupModel } from "./model.js";
import { setupScore } from "./score.js";
import { setupSources } from "./sources.js";
import { BINS } from "./tokens.js";

const $ = (id) => document.getElementById(id);

const page = {
  api: new Api(`${location.origin}/v1`, sessionKey.get),
  model: null, // this server's model id (from /v1/models)
  details: null, // /v1/londinium/model
  settings: () => readSettings($("settings")),
  // Show an error; a 401 asks for the key again (with the server's message).
  fail(error) {
    if (error && error.name === "AbortError") return;
    if (error && error.status === 401) {
      askKey(error.message).then(connect);
      return;
    }
    const box = $("error");
    box.textContent = error && error.message ? error.message : String(error);
    box.hidden = false;
  },
  clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  },
};

// ---- the API key: asked once, kept for the tab's session ------------------------------------------

let keyWaiters = [];

function askKey(message) {
  const dialog = $("key-dialog");
  $("key-error").textContent = sessionKey.get() ? message : "";
  $("key-input").value = "";
  if (!dialog.open) dialog.showModal();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

function setupKey() {
  const dialog = $("key-dialog");
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "save") {
      sessionKey.set($("key-input").value.trim());
      const waiters = keyWaiters;
      keyWaiters = [];
      waiters.forEach((resolve) => resolve());
    }
    dialog.returnValue = "";
  });
  $("key-cancel").addEventListener("click", () => dialog.close("cancel"));
  $("key-button").addEventListener("click", () => askKey("").then(connect));
}

// ---- tabs: arrow keys move between them, as the ARIA tabs pattern says -----------------------------

const shown = new Map(); // view id -> function run when it is first shown

function select(tab) {
  for (const t of document.querySelectorAll("[role=tab]")) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  const view = tab.getAttribute("aria-controls");
  const first = shown.get(view);
  if (first) {
    shown.delete(view);
    first();
  }
}

function setupTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const i = tabs.indexOf(tab);
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (to === undefined) return;
      e.preventDefault();
      const next = tabs[(to + tabs.length) % tabs.length];
      next.focus();
      select(next);
    });
  }
}

// ---- the colour legend beside token views ---------------------------------------------------------

function legends() {
  for (const slot of document.querySelectorAll(".legend-slot")) {
    slot.replaceChildren(h("p", { className: "legend" }, "Token colours, by the model's probability of each token: ",
      ...BINS.map((b, i) => h("span", { className: `swatch p${i}` }, b.label))));
  }
}

// ---- connecting: the model's name, or the key, or why not ----------------------------------------

async function connect() {
  const line = $("model-line");
  try {
    const models = await page.api.json("/models");
    page.clearError();
    const card = models.data[0];
    page.model = card.id;
    line.textContent = `Model ${card.id}, context ${card.max_model_len} tokens`;
    document.dispatchEvent(new CustomEvent("londinium:connected"));
    try {
      page.details = await page.api.json("/londinium/model");
      const m = page.details;
      line.textContent = `Model ${card.id}: ${(m.parameters / 1e6).toFixed(2)} M parameters, context ${m.context} tokens` +
        (m.training_tokens ? `, trained on ${m.training_tokens.toLocaleString("en")} tokens` : "");
      document.dispatchEvent(new CustomEvent("londinium:details"));
    } catch (e) {
      if (e.status === 401) throw e;
    }
  } catch (e) {
    if (e.status === 503) {
      line.textContent = `The server is not ready: ${e.message}`;
      setTimeout(connect, 1000);
      return;
    }
    line.textContent = "Not connected";
    page.fail(e);
  }
}

// Escape closes the disclosure (the sampling settings, the chat template) the focus is in, and
// leaves the focus on its summary; dialogs close on Escape by themselves.
function setupEscape() {
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || e.defaultPrevented) return;
    const open = document.activeElement && document.activeElement.closest("details[open]");
    if (!open || open.closest("dialog")) return;
    open.open = false;
    open.querySelector("summary").focus();
  });
}

setupKey();
setupTabs();
setupEscape();
legends();
setupChat(page);
setupScore(page);
shown.set("view-model", setupModel(page));
setupCompare(page);
setupSources(page);
connect();
