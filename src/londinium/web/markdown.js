// A small, safe Markdown renderer for the subset londinium's reports use: headings, paragraphs,
// tables (with column alignment and <br> in cells), lists, block quotes, fenced code, rules,
// <details><summary> blocks, YAML front matter, and inline code, bold, emphasis, links and images.
//
// Safety by construction: it builds DOM nodes and sets only textContent and a few attributes,
// never innerHTML, so any HTML in the text is shown as text. The only tags it recognises are the
// exact `<br>`, `<details><summary>...</summary>` and `</details>` the reports write, and it makes
// those elements itself. Links go out only to http(s) URLs; an image is shown only if
// `options.image(src)` gives a URL for it (the page allows the report's own plots), else its alt text.

const BLOCK_START = /^(#{1,6}\s|```|>|\s*([-*+]|\d+[.)])\s|<details>|<\/details>)/;
const RULE = /^ {0,3}([-*_])( *\1){2,} *$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const LIST_ITEM = /^(\s*)([-*+]|\d+[.)])\s+(.*)$/;

function el(tag, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  return node;
}

function cells(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function isTableStart(lines, i) {
  return lines[i].includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("-");
}

export function renderMarkdown(text, options = {}) {
  const offset = options.headingOffset || 0;
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  const root = document.createDocumentFragment();
  const stack = [root];
  const here = () => stack[stack.length - 1];
  const inline = (parent, s) => renderInline(parent, s, options);
  let i = 0;

  if (lines[0] === "---") {
    const end = lines.indexOf("---", 1);
    if (end > 0) {
      const details = el("details");
      details.append(el("summary", "Front matter"), el("pre", lines.slice(1, end).join("\n")));
      root.append(details);
      i = end + 1;
    }
  }

  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i++;
    } else if (line.startsWith("```")) {
      const body = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) body.push(lines[i]);
      i++;
      const pre = el("pre");
      pre.append(el("code", body.join("\n")));
      here().append(pre);
    } else if ((m = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line))) {
      const h = el(`h${Math.min(6, m[1].length + offset)}`);
      inline(h, m[2]);
      here().append(h);
      i++;
    } else if ((m = /^<details>\s*(?:<summary>(.*?)<\/summary>)?\s*$/.exec(line))) {
      const details = el("details");
      const summary = el("summary");
      inline(summary, m[1] || "Details");
      details.append(summary);
      here().append(details);
      stack.push(details);
      i++;
    } else if (/^<\/details>\s*$/.test(line)) {
      if (stack.length > 1) stack.pop();
      i++;
    } else if (RULE.test(line)) {
      here().append(el("hr"));
      i++;
    } else if (isTableStart(lines, i)) {
      i = table(lines, i, here(), inline);
    } else if (line.startsWith(">")) {
      const quote = el("blockquote");
      const p = el("p");
      let first = true;
      for (; i < lines.length && lines[i].startsWith(">"); i++) {
        if (!first) p.append(el("br"));
        inline(p, lines[i].replace(/^> ?/, ""));
        first = false;
      }
      quote.append(p);
      here().append(quote);
    } else if (LIST_ITEM.test(line)) {
      i = list(lines, i, here(), inline);
    } else {
      const para = [];
      for (; i < lines.length && lines[i].trim() && !BLOCK_START.test(lines[i]) && !RULE.test(lines[i]) && !isTableStart(lines, i); i++) {
        para.push(lines[i].trim());
      }
      if (!para.length) para.push(lines[i++].trim()); // a line that only looked like a block start
      const p = el("p");
      inline(p, para.join(" "));
      here().append(p);
    }
  }
  return root;
}

function table(lines, i, parent, inline) {
  const head = cells(lines[i]);
  const align = cells(lines[i + 1]).map((c) => (c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : c.startsWith(":") ? "left" : ""));
  const row = (texts, tag) => {
    const tr = el("tr");
    texts.slice(0, head.length).forEach((c, k) => {
      const cell = el(tag);
      if (tag === "th") cell.scope = "col";
      if (align[k]) cell.className = `align-${align[k]}`;
      inline(cell, c);
      tr.append(cell);
    });
    return tr;
  };
  const t = el("table");
  const thead = el("thead");
  thead.append(row(head, "th"));
  t.append(thead);
  const body = el("tbody");
  for (i += 2; i < lines.length && lines[i].includes("|") && lines[i].trim(); i++) body.append(row(cells(lines[i]), "td"));
  t.append(body);
  const wrap = el("div");
  wrap.className = "table-wrap"; // scrolls sideways in a narrow window instead of widening the page
  wrap.append(t);
  parent.append(wrap);
  return i;
}

function list(lines, i, parent, inline) {
  const ordered = /^\s*\d/.test(lines[i]);
  const l = el(ordered ? "ol" : "ul");
  let item = null;
  let textOf = [];
  const flush = () => item && (inline(item, textOf.join(" ")), l.append(item));
  for (; i < lines.length && lines[i].trim(); i++) {
    const m = LIST_ITEM.exec(lines[i]);
    if (m) {
      flush();
      item = el("li");
      textOf = [m[3]];
    } else if (/^\s+/.test(lines[i])) {
      textOf.push(lines[i].trim());
    } else {
      break;
    }
  }
  flush();
  parent.append(l);
  return i;
}

const SPECIAL = /[\\`*_!\[<]/;

// Inline Markdown into `parent`: code, **bold**, *emphasis*, [links](https://...), ![images](...), <br>.
export function renderInline(parent, s, options = {}) {
  let text = "";
  const flush = () => {
    if (text) parent.append(text);
    text = "";
  };
  let i = 0;
  while (i < s.length) {
    const rest = s.slice(i);
    let m;
    if (rest[0] === "\\" && /^\\[\\`*_{}\[\]()#+\-.!|<>]/.test(rest)) {
      text += rest[1];
      i += 2;
    } else if ((m = /^(`+)([\s\S]*?[^`])\1(?!`)/.exec(rest))) {
      flush();
      parent.append(el("code", m[2].replace(/^ (.*) $/, "$1")));
      i += m[0].length;
    } else if ((m = /^!\[([^\]]*)\]\(([^)\s]+)\)/.exec(rest))) {
      flush();
      image(parent, m[1], m[2], options);
      i += m[0].length;
    } else if ((m = /^\[([^\]]+)\]\(([^)\s]+)\)/.exec(rest))) {
      flush();
      if (/^https?:\/\//i.test(m[2])) {
        const a = el("a");
        a.href = m[2];
        a.rel = "noopener noreferrer";
        renderInline(a, m[1], options);
        parent.append(a);
      } else {
        renderInline(parent, m[1], options);
      }
      i += m[0].length;
    } else if ((m = /^(\*\*|__)(?=\S)([\s\S]*?\S)\1/.exec(rest)) && flanked(s, i, m[0].length, m[1])) {
      flush();
      const strong = el("strong");
      renderInline(strong, m[2], options);
      parent.append(strong);
      i += m[0].length;
    } else if ((m = /^([*_])(?=[^\s*_])([\s\S]*?[^\s\\])\1(?!\1)/.exec(rest)) && flanked(s, i, m[0].length, m[1])) {
      flush();
      const em = el("em");
      renderInline(em, m[2], options);
      parent.append(em);
      i += m[0].length;
    } else if ((m = /^<br\s*\/?>/i.exec(rest))) {
      flush();
      parent.append(el("br"));
      i += m[0].length;
    } else {
      const next = rest.slice(1).search(SPECIAL);
      const take = next < 0 ? rest.length : next + 1;
      text += rest.slice(0, take);
      i += take;
    }
  }
  flush();
}

// `_` emphasis only between non-word characters, so snake_case names stay as they are.
function flanked(s, start, length, marker) {
  if (marker[0] !== "_") return true;
  const word = /[\p{L}\p{N}]/u;
  return !word.test(s[start - 1] || "") && !word.test(s[start + length] || "");
}

function image(parent, alt, src, options) {
  const url = options.image ? options.image(src) : null;
  if (!url) {
    parent.append(alt ? `[image: ${alt}]` : "[image]");
    return;
  }
  const img = el("img");
  img.alt = alt;
  if (typeof url === "string") img.src = url;
  else Promise.resolve(url).then((u) => { if (u) img.src = u; }).catch(() => img.replaceWith(`[image not loaded: ${alt}]`));
  parent.append(img);
}
