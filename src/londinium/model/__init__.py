"""The GPT model (`gpt.py`), its size, FLOPs and memory (`info.py`), and its map onto `transformers` (`hf_layout.py`)."""
