"""Tool-use transcripts for the SFT tests: OpenAI's chat fine-tuning lines with tool turns."""

from __future__ import annotations

import json

SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}


def call(call_id: str, q: str) -> dict:
    """A call of SEARCH, its arguments as compact JSON (the text the server's grammar writes)."""
    return {"id": call_id, "type": "function", "function": {"name": "search", "arguments": json.dumps({"q": q}, separators=(",", ":"))}}


def reflecting_line(question: str = "Where is mercy?", answer: str = "In Portia's speech.") -> dict:
    """Two calls, the first failing and a reflection before the second; then two calls at once
    (answered out of order, by id); then the answer."""
    return {"tools": [SEARCH], "messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": None, "tool_calls": [call("c1", "")]},
        {"role": "tool", "tool_call_id": "c1", "content": "Error: the query is empty"},
        {"role": "assistant", "content": "The query was empty; I search for the word.", "tool_calls": [call("c2", "mercy")]},
        {"role": "tool", "tool_call_id": "c2", "content": "Portia: The quality of mercy"},
        {"role": "assistant", "content": None, "tool_calls": [call("c3", "Portia"), call("c4", "strained")]},
        {"role": "tool", "tool_call_id": "c4", "content": "is not strain'd"},
        {"role": "tool", "tool_call_id": "c3", "content": "Enter PORTIA"},
        {"role": "assistant", "content": answer}]}
