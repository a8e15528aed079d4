// Calls to an OpenAI-compatible server (this one, or another for Compare), with the API key and
// OpenAI's error shape turned into one readable message.

import { jsonEvents } from "./sse.js";

const KEY = "londinium.apiKey";

// The key of this server: asked once, kept for the browser tab's session only (sessionStorage is
// cleared when the tab closes and is not sent anywhere by itself).
export const sessionKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (key) => (key ? sessionStorage.setItem(KEY, key) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(message, status = 0, code = null, param = null) {
    super(message);
    this.name = "ApiError";
    Object.assign(this, { status, code, param });
  }
}

export class Api {
  // base: the server's /v1 URL; key: a function returning the bearer key ("" for none).
  constructor(base, key = () => "") {
    this.base = base.replace(/\/+$/, "");
    this.key = key;
  }

  get sameOrigin() {
    return new URL(this.base, location.href).origin === location.origin;
  }

  async request(path, { method = "GET", body, query, signal } = {}) {
    const url = new URL(this.base + path, location.href);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    const headers = {};
    const key = this.key();
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      const hint = this.sameOrigin ? "is the server running?"
        : `is it running, and does it allow this page's origin (serve.allowed_origins = ["${location.origin}"])?`;
      throw new ApiError(`could not reach ${this.base}: ${hint}`);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async json(path, options) {
    return (await this.request(path, options)).json();
  }

  async text(path, options) {
    return (await this.request(path, options)).text();
  }

  async blob(path, options) {
    return (await this.request(path, options)).blob();
  }

  // The chunks of a streamed completion or chat completion.
  async *stream(path, body, signal) {
    const response = await this.request(path, { method: "POST", body: { ...body, stream: true }, signal });
    yield* jsonEvents(response.body);
  }
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  let param = null;
  try {
    const { error } = await response.json();
    if (error && error.message) ({ message, code = null, param = null } = error);
  } catch {
    // not OpenAI's error shape: keep the status line
  }
  return new ApiError(message, response.status, code, param);
}
