// Server-Sent Events as the WHATWG spec frames them, for a fetch() body (EventSource cannot send
// a POST body or an Authorization header). The server sends `data: {json}\n\n` and ends with
// `data: [DONE]`; the parser also takes what the spec allows and other servers send: CRLF or CR line
// ends, comment lines (`: keep-alive`), `event:`/`id:` fields, several `data:` lines joined by "\n",
// and chunks cut anywhere, even inside a multi-byte character (the decoder is streaming).

export class SSEParser {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.event = "";
    this.pendingCR = false; // a chunk ended with "\r": a "\n" opening the next one belongs to it
  }

  // Feed text; returns the events completed by it, each {event, data}.
  push(text) {
    if (!text) return [];
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.pendingCR = text.endsWith("\r");
    this.buffer += text;
    const events = [];
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop(); // the unfinished last line (empty when the text ended with a line end)
    for (const line of lines) {
      if (line === "") {
        if (this.data.length) events.push({ event: this.event || "message", data: this.data.join("\n") });
        this.data = [];
        this.event = "";
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.event = value;
    }
    return events;
  }
}

// The JSON payloads of a streamed OpenAI response, until `[DONE]`. An `{"error": ...}` event (an
// error after the 200) is thrown as an Error carrying the server's message.
export async function* jsonEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SSEParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      for (const { data } of parser.push(value)) {
        if (data === "[DONE]") return;
        const payload = JSON.parse(data);
        if (payload && payload.error) {
          const err = new Error(payload.error.message || "the server reported an error");
          err.code = payload.error.code;
          throw err;
        }
        yield payload;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
