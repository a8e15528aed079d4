"""Export: a checkpoint as a Hugging Face `transformers` directory (`hf.py`, with its model card and
record in `card.py`) or a GGUF file for llama.cpp (`gguf.py`); the stage is `run.export_run`."""
