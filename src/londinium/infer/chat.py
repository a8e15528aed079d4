"""`londinium chat`: a REPL that streams the model's reply to what you type.

Two kinds of run, two ways to talk (the banner says which):
- A base model continues text, it does not answer questions. Each turn appends your line and the
  model's continuation to the conversation, kept as token ids in a rolling window: when it grows
  past the window, the oldest tokens are dropped, so a long session never hits the context limit.
- A fine-tuned run (`londinium sft`: its config says `train.objective = 'sft'`) was trained on the
  chat template, so the conversation is kept as messages and each turn is rendered through the
  template (`tokenize_chat`, as the server's /v1/chat/completions does), the model writing after
  `<|assistant|>` until `<|end|>`. The oldest turns are dropped when it outgrows the window.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from londinium.config import parse_override
from londinium.errors import LondiniumError
from londinium.infer.chat_template import END_OF_TURN
from londinium.infer.engine import Engine
from londinium.infer.sampling import SamplingParams
from londinium.infer.user_text import UserTextError, check_text, decode_line

HELP = """commands:
  /set KEY VALUE   change a setting, e.g. /set temperature 0.7, /set max_tokens 50, /set stop ["\\n"]
  /show            print the current settings
  /reset           forget the conversation so far
  /help            this text
  /quit            leave (Ctrl-D too)
Anything else is text for the model to continue; Ctrl-C stops a continuation.
settings: """

FLOATS = ("temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty")
INTS = ("max_tokens", "top_k", "no_repeat_ngram_size")
SETTABLE = (*FLOATS, *INTS, "seed", "stop")


def _setting(key: str, raw: str) -> Any:
    """The typed value of `/set KEY VALUE` (VALUE read as a TOML literal, else as a bare string)."""
    if key not in SETTABLE:
        raise LondiniumError(f"/set {key}: unknown setting; settable: {', '.join(SETTABLE)}")
    _, _, value = parse_override(f"generate.{key}={raw}")
    if key in FLOATS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if key in INTS and isinstance(value, int) and not isinstance(value, bool):
        return value
    if key == "seed" and (value in ("none", "None") or (isinstance(value, int) and not isinstance(value, bool))):
        return None if value in ("none", "None") or value < 0 else value
    if key == "stop" and isinstance(value, str):
        return [value] if value else []
    if key == "stop" and isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    kind = "a number" if key in FLOATS else "an integer" if key in INTS else "an integer or none" if key == "seed" else "a string or a list of strings"
    raise LondiniumError(f"/set {key} {raw}: expected {kind}")


class ChatSession:
    """One conversation: settings, the rolling history of token ids, and what a line of input does."""

    def __init__(self, engine: Engine, params: SamplingParams, window: int = 0, out: IO[str] | None = None,
                 assistant: bool = False):
        self.engine = engine
        self.params = params.replace(n=1, best_of=None, num_beams=1, logprobs=None).validate(engine.vocab_size)
        self.window = window
        self.out = out if out is not None else sys.stdout  # looked up at call time: tests swap sys.stdout
        self.assistant = assistant  # talk through the chat template (a fine-tuned run), else continue text
        self.history: list[int] = []
        self.messages: list[dict[str, str]] = []  # the conversation, in assistant mode
        self.last_prompt: list[int] = []  # what the model saw last turn (the window's contents)

    def settings(self) -> str:
        return ", ".join(f"{k} = {getattr(self.params, k)!r}" for k in SETTABLE)

    def handle(self, line: str) -> bool:
        """Act on one line of input; False when the user asked to leave."""
        line = line.rstrip("\r\n")
        command = line.strip()
        if command in ("/quit", "/exit"):
            return False
        if command == "/help":
            self._say(HELP + self.settings())
        elif command == "/show":
            self._say(self.settings())
        elif command == "/reset":
            self.history, self.messages = [], []
            self._say("(conversation reset)")
        elif command.startswith("/set"):
            self._set(command[len("/set"):].strip())
        elif command.startswith("/"):
            self._say(f"unknown command {command.split()[0]}; /help lists them")
        elif command:
            self.turn(line)
        return True

    def _set(self, rest: str) -> None:
        key, _, raw = rest.partition(" ")
        try:
            value = _setting(key, raw.strip())
            self.params = self.params.replace(**{key: value}).validate(self.engine.vocab_size)
        except LondiniumError as e:
            self._say(f"error: {e}")
            return
        self._say(f"{key} = {value!r}")

    def turn(self, text: str) -> str:
        """Continue the conversation with `text`; stream the reply and return it."""
        from londinium.tokenizer.codec import encode

        window = min(self.window or self.engine.context, self.engine.context) - self.params.max_tokens
        if window < 1:
            self._say(f"error: max_tokens = {self.params.max_tokens} leaves no room in the model's context of {self.engine.context}; /set max_tokens lower")
            return ""
        params = self.params
        if self.assistant:
            ids = self._chat_prompt(text, window)
            if ids is None:
                return ""
            params = params.replace(stop_token_ids=[*params.stop_token_ids, self.engine.tokenizer.token_to_id(END_OF_TURN)])
        else:
            ids = self.history + encode(self.engine.tokenizer, ("\n" if self.history else "") + text)
            ids = ids[-window:]  # the rolling window: the oldest tokens go first
        self.last_prompt = ids
        pieces: list[str] = []
        try:
            for delta in self.engine.stream(ids, params):
                pieces.append(delta.text)
                self.out.write(delta.text)
                self.out.flush()
        except KeyboardInterrupt:
            pieces.append("")
            self.out.write(" [stopped]")
        self.out.write("\n")
        self.out.flush()
        reply = "".join(pieces)
        if self.assistant:
            self.messages.append({"role": "assistant", "content": reply})
        else:
            self.history = ids + encode(self.engine.tokenizer, reply)
        return reply

    def _chat_prompt(self, text: str, window: int) -> list[int] | None:
        """The conversation with `text` as the next user turn, through the chat template, its oldest
        turns dropped until it fits `window` tokens (None, and a message, when the line alone does not)."""
        from londinium.infer.chat_template import tokenize_chat

        self.messages.append({"role": "user", "content": text})
        while True:
            ids = tokenize_chat(self.engine.tokenizer, self.messages).ids
            if len(ids) <= window:
                return ids
            if len(self.messages) == 1:
                self.messages = []
                self._say(f"error: the line is {len(ids)} tokens through the chat template; with max_tokens = "
                          f"{self.params.max_tokens} the model's context of {self.engine.context} holds {window}; "
                          "type less or /set max_tokens lower")
                return None
            del self.messages[0]  # the oldest turn goes first; what is left starts with a user turn
            while self.messages[0]["role"] != "user":
                del self.messages[0]

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def run_chat(session: ChatSession, stdin: IO[str] | None = None, banner: str = "") -> int:
    """The read-eval-print loop. With a terminal it prompts with `> ` and has line editing."""
    stdin = stdin if stdin is not None else sys.stdin  # at call time, not import time
    interactive = stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())
    if banner:
        session._say(banner)
    raw_in = getattr(stdin, "buffer", None)  # bytes, so a line that is not UTF-8 is refused, not fatal
    n = 0
    while True:
        n += 1
        try:
            if interactive:
                line = input("> ")
            elif raw_in is not None:
                raw = raw_in.readline()
                if raw == b"":
                    break
                line = decode_line(raw, f"input line {n}")
            else:
                line = stdin.readline()
                if line == "":
                    break
            check_text(line, f"input line {n}")
        except (EOFError, KeyboardInterrupt):
            break
        except (UserTextError, UnicodeDecodeError) as e:
            session._say(f"error: {e}; the line was skipped" if isinstance(e, UserTextError)
                         else f"error: input line {n} is not valid UTF-8 text; the line was skipped")
            continue
        if not session.handle(line):
            break
    return 0
