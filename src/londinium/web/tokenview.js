// Draws tokens coloured by probability, with each token's probability and the model's top
// alternatives in a tooltip on hover and on keyboard focus. The tokens of one text are one stop in
// the tab order; the arrow keys (and Home, End) move between them (a roving tabindex), so a long
// reply does not take hundreds of Tab presses, and a screen reader reads the focused token with
// its tooltip (aria-describedby).

import { bin, percent, probability, visible } from "./tokens.js";

const data = new WeakMap(); // token span -> its token
let tip = null;

function tooltip() {
  if (!tip) {
    tip = document.createElement("div");
    tip.id = "token-tip";
    tip.setAttribute("role", "tooltip");
    tip.hidden = true;
    document.body.append(tip);
  }
  return tip;
}

function show(span) {
  const token = data.get(span);
  const t = tooltip();
  t.replaceChildren();
  const head = document.createElement("p");
  const code = document.createElement("code");
  code.textContent = visible(token.piece);
  head.append(code, ` ${percent(probability(token.logprob))}`);
  t.append(head);
  if (token.top && token.top.length) {
    const list = document.createElement("ol");
    list.setAttribute("aria-label", "Top alternatives");
    for (const alt of token.top) {
      const item = document.createElement("li");
      const c = document.createElement("code");
      c.textContent = visible(alt.token);
      item.append(c, ` ${percent(probability(alt.logprob))}`);
      if (alt.token === token.piece) item.className = "chosen";
      list.append(item);
    }
    t.append(list);
  }
  t.hidden = false;
  const r = span.getBoundingClientRect();
  const width = Math.min(t.offsetWidth, document.documentElement.clientWidth - 8);
  t.style.left = `${Math.max(4, Math.min(r.left, document.documentElement.clientWidth - width - 4)) + window.scrollX}px`;
  t.style.top = `${r.bottom + window.scrollY + 4}px`;
  span.setAttribute("aria-describedby", "token-tip");
}

function hide(span) {
  if (span) span.removeAttribute("aria-describedby");
  if (tip && !(document.activeElement && data.has(document.activeElement))) tip.hidden = true;
}

function move(container, from, to) {
  const spans = [...container.querySelectorAll(".tok")];
  if (!spans.length) return;
  const i = Math.max(0, Math.min(spans.length - 1, to(spans.indexOf(from), spans.length)));
  from.tabIndex = -1;
  spans[i].tabIndex = 0;
  spans[i].focus();
}

function listen(container) {
  if (container.dataset.tokens) return;
  container.dataset.tokens = "on";
  container.addEventListener("focusin", (e) => data.has(e.target) && show(e.target));
  container.addEventListener("focusout", (e) => data.has(e.target) && hide(e.target));
  container.addEventListener("mouseover", (e) => data.has(e.target) && show(e.target));
  container.addEventListener("mouseout", (e) => data.has(e.target) && document.activeElement !== e.target && hide(e.target));
  container.addEventListener("keydown", (e) => {
    if (!data.has(e.target)) return;
    const steps = { ArrowRight: (i) => i + 1, ArrowDown: (i) => i + 1, ArrowLeft: (i) => i - 1, ArrowUp: (i) => i - 1,
      Home: () => 0, End: (i, n) => n - 1 };
    if (e.key === "Escape" && tip && !tip.hidden) {
      e.stopPropagation(); // this Escape closes the tooltip only, not the panel around it
      tip.hidden = true;
      e.target.removeAttribute("aria-describedby");
      return;
    }
    if (!steps[e.key]) return;
    e.preventDefault();
    move(container, e.target, steps[e.key]);
  });
}

// Fill `container` with `segments` ({text, token}: see tokens.align). `marked`: indices of segments
// to outline as surprising.
export function renderTokens(container, segments, marked = new Set()) {
  listen(container);
  const focused = container.contains(document.activeElement) ? [...container.querySelectorAll(".tok")].indexOf(document.activeElement) : -1;
  container.replaceChildren();
  let first = true;
  segments.forEach((seg, i) => {
    if (!seg.token) {
      container.append(seg.text);
      return;
    }
    const span = document.createElement("span");
    span.className = `tok p${bin(seg.token.logprob)}${marked.has(i) ? " surprise" : ""}`;
    span.textContent = seg.text;
    span.tabIndex = first ? 0 : -1;
    first = false;
    data.set(span, seg.token);
    container.append(span);
  });
  if (focused >= 0) move(container, container.querySelector(".tok"), () => focused);
}
