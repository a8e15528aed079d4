"""Export: a trained checkpoint written in formats other tools load (Hugging Face directory, GGUF)."""
