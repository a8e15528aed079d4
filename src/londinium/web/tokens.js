// Tokens and their probabilities: OpenAI's two log-probability shapes read into one, the tokens laid
// over the text they make, the probability scale the page colours them by, and the most surprising
// words of a scored text. No DOM here (tokenview.js draws), so all of it is unit-tested.

// The colour scale, most likely first: a token's class is `p<index>`. Five steps, so the colours
// stay distinguishable (blue for likely, orange-red for surprising: safe for red-green colour blindness).
export const BINS = [
  { min: 0.5, label: "50% or more" },
  { min: 0.2, label: "20% to 50%" },
  { min: 0.05, label: "5% to 20%" },
  { min: 0.01, label: "1% to 5%" },
  { min: 0, label: "under 1%" },
];

export function probability(logprob) {
  return Number.isFinite(logprob) ? Math.exp(logprob) : 0;
}

// The bin of a token: 0 (likely) .. BINS.length - 1 (surprising).
export function bin(logprob) {
  const p = probability(logprob);
  const i = BINS.findIndex((b) => p >= b.min);
  return i < 0 ? BINS.length - 1 : i;
}

// "42%", "3.1%", "0.042%", "<0.001%": enough digits to tell small probabilities apart.
export function percent(p) {
  const x = p * 100;
  if (x >= 10) return `${Math.round(x)}%`;
  if (x >= 1) return `${x.toFixed(1)}%`;
  if (x >= 0.001) return `${x.toPrecision(2)}%`;
  return "<0.001%";
}

// A token as text a reader can see: spaces and line ends made visible.
export function visible(text) {
  return text.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5") || "\u2205";
}

// Chat's shape (`logprobs.content`): one entry per token with its UTF-8 bytes. The bytes are decoded
// in order by one streaming decoder, so a character split across two tokens goes whole to the second
// and the pieces join to exactly the text (the `token` strings may hold U+FFFD for half a character).
export function fromChat(content) {
  const decoder = new TextDecoder("utf-8");
  return (content || []).map((e) => ({
    piece: Array.isArray(e.bytes) ? decoder.decode(new Uint8Array(e.bytes), { stream: true }) : e.token,
    logprob: e.logprob,
    top: (e.top_logprobs || []).map((t) => ({ token: t.token, logprob: t.logprob })),
  }));
}

// Completions' shape: parallel lists, alternatives as {token: logprob}.
export function fromCompletion(lp) {
  if (!lp || !lp.tokens) return [];
  return lp.tokens.map((token, i) => ({
    piece: token,
    logprob: lp.token_logprobs[i],
    top: Object.entries((lp.top_logprobs || [])[i] || {})
      .map(([t, logprob]) => ({ token: t, logprob }))
      .sort((a, b) => b.logprob - a.logprob),
  }));
}

// The text cut into segments, each with the token that made it, or none for text no token
// accounts for. Tokens after the text ends (a stop string the server held back and cut) are left
// out; a last token the text ends inside gets the part that is there.
export function align(text, tokens) {
  const out = [];
  let pos = 0;
  for (const token of tokens) {
    if (pos >= text.length) break;
    if (!token.piece) continue; // the first half of a split character: the next token shows it
    if (text.startsWith(token.piece, pos)) {
      out.push({ text: token.piece, token });
      pos += token.piece.length;
    } else if (token.piece.startsWith(text.slice(pos))) {
      out.push({ text: text.slice(pos), token });
      pos = text.length;
    } else {
      break;
    }
  }
  if (pos < text.length) out.push({ text: text.slice(pos), token: null });
  return out;
}

const WORD = /[\p{L}\p{M}\p{N}'\u2019]+/gu;

// The `count` words of a scored text that surprised the model most: a word's surprise is the sum
// of the negative log-probabilities of the tokens that overlap it (in bits). Tokens are
// {piece, start, logprob}; returns [{word, start, end, bits, probability, tokens: [token indices]}],
// most surprising first.
export function surprisingWords(text, tokens, count = 5) {
  const words = [...text.matchAll(WORD)].map((m) => ({ word: m[0], start: m.index, end: m.index + m[0].length, nats: 0, tokens: [] }));
  let w = 0;
  tokens.forEach((t, i) => {
    const start = t.start;
    const end = start + t.piece.length;
    if (end <= start) return;
    while (w < words.length && words[w].end <= start) w++;
    for (let k = w; k < words.length && words[k].start < end; k++) {
      words[k].nats -= t.logprob;
      words[k].tokens.push(i);
    }
  });
  return words
    .filter((x) => x.tokens.length)
    .sort((a, b) => b.nats - a.nats)
    .slice(0, count)
    .map(({ word, start, end, nats, tokens: idx }) => ({ word, start, end, bits: nats / Math.LN2, probability: Math.exp(-nats), tokens: idx }));
}
