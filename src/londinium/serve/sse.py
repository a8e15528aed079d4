"""Server-Sent Events framing as the openai SDK parses it: `data: {json}` and a blank line, ending with
`data: [DONE]`. Shared by `londinium serve` (streaming.py) and the gateway, torch-free."""

from __future__ import annotations

import json
from typing import Any

DONE = "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"
