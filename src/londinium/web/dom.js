// h("p", {className: "meta"}, "text", child): an element with properties and children (strings
// become text nodes, so nothing is ever parsed as HTML).
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name.startsWith("aria-") || name.startsWith("data-") || name === "role") node.setAttribute(name, value);
    else node[name] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}
