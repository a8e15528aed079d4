"""`londinium gateway`: one OpenAI-compatible endpoint in front of many backends, as a chain of small
steps (auth, usage, limits, route, upstream); see docs/gateway.md and `chain.py`."""
