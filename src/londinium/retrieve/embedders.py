"""Embedding models behind one interface: `embed(texts) -> float32 [n, dim]`, unit-length rows.

    embedder = open_embedder(ws, cfg)          # what [retrieve] names
    embedder.embed(["Vpon this blasted heath"]), embedder.name, embedder.dim

All of them work offline:
- `corpus`: static word vectors learned from the corpus by `londinium index vectors` (static.py);
- `model`: a trained run's hidden states, mean-pooled over the text's tokens (`model/load.load_run`);
- `sentence-transformers`: a model folder on disk (the `embeddings` extra installs the library);
- `wordllama`: the 256-dimension static model inside the wordllama wheel (its own loader looks for a
  config in the wrong folder and then tries the hub: it is given a cache folder and no download);
- `openai`: any OpenAI-compatible `/v1/embeddings`, through the official `openai` client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from londinium.config import Config
from londinium.errors import LondiniumError
from londinium.workspace import Workspace

BATCH = 64  # texts per forward pass of a neural embedder


class EmbedderError(LondiniumError):
    """An embedding model cannot be loaded or used; the message names the setting and what to do."""


def unit_rows(x: Any) -> np.ndarray:
    """float32 rows scaled to unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


@dataclass
class Embedder:
    """A named embedding function; `about` describes the model (for meta.json and /v1/embeddings)."""

    name: str
    dim: int
    encode: Callable[[list[str]], np.ndarray]
    about: dict[str, Any] = field(default_factory=dict)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = np.concatenate([unit_rows(self.encode(texts[i:i + BATCH * 16])) for i in range(0, len(texts), BATCH * 16)])
        if out.shape != (len(texts), self.dim) or not np.isfinite(out).all():
            raise EmbedderError(f"embedder {self.name} returned {out.shape} values (or non-finite ones) for {len(texts)} texts of dimension {self.dim}")
        return out


def corpus_embedder(path: Path) -> Embedder:
    from londinium.retrieve.static import StaticEmbedding

    try:
        model = StaticEmbedding.load(path)
    except (OSError, ValueError, KeyError) as e:
        raise EmbedderError(f"{path}: not a corpus embedder ({e}); rebuild it with `londinium index vectors --force`") from None
    return Embedder("corpus", model.dim, model.embed, {"kind": "corpus", "words": len(model.words)})


def model_embedder(ws: Workspace, run: str, device: str = "cpu") -> Embedder:
    """Mean of the final (normalised) hidden states over the text's tokens, the text cut to the context."""
    import torch

    from londinium.model.load import load_run
    from londinium.tokenizer.codec import encode

    trained = load_run(ws, run=run, checkpoint="best", device=device, device_setting="retrieve.embedder_run")
    model, context = trained.model, trained.config.model.context
    captured: list[torch.Tensor] = []
    model.transformer.h[-1].register_forward_hook(lambda mod, inp, out: captured.append(out))

    @torch.no_grad()
    def encode_texts(texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            ids = encode(trained.tokenizer, text)[:context] or [0]
            captured.clear()
            model(torch.tensor([ids], device=trained.device), logits_to_keep=1)  # the head on one position only
            rows.append(model.transformer.ln_f(captured[0])[0].mean(0).float().cpu().numpy())
        return np.stack(rows)

    return Embedder(f"model:{run}", model.config.n_embd, encode_texts,
                    {"kind": "model", "run": run, "checkpoint": trained.checkpoint.path.name})


def sentence_transformers_embedder(path: str) -> Embedder:
    if not path:
        raise EmbedderError("retrieve.embedder = 'sentence-transformers' needs retrieve.embedder_path: the model folder")
    if not Path(path).is_dir():
        raise EmbedderError(f"retrieve.embedder_path = {path!r}: no such folder (a sentence-transformers model folder)")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise EmbedderError("sentence-transformers is not installed: pip install 'londinium[embeddings]'") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a folder on disk: never the hub
    model = SentenceTransformer(str(path), device="cpu")
    dim = model.get_sentence_embedding_dimension()
    return Embedder(f"sentence-transformers:{Path(path).name}", int(dim),
                    lambda texts: model.encode(texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False),
                    {"kind": "sentence-transformers", "path": str(path)})


def wordllama_embedder(cache_dir: Path) -> Embedder:
    try:
        import wordllama
        from wordllama import WordLlama
    except ImportError:
        raise EmbedderError("wordllama is not installed: pip install 'londinium[embeddings]'") from None
    import shutil

    # load() looks for the tokenizer config under the cache folder, then downloads: copy in the one the wheel ships.
    package = Path(wordllama.__file__).parent
    target = Path(cache_dir) / "wordllama"
    for config in (package / "tokenizers").glob("*.json"):
        (target / "tokenizers").mkdir(parents=True, exist_ok=True)
        if not (target / "tokenizers" / config.name).is_file():
            shutil.copy(config, target / "tokenizers" / config.name)
    (target / "weights").mkdir(parents=True, exist_ok=True)
    for weights in (package / "weights").glob("*.safetensors"):
        if not (target / "weights" / weights.name).is_file():
            shutil.copy(weights, target / "weights" / weights.name)
    model = WordLlama.load(cache_dir=target, disable_download=True)
    dim = int(model.embed(["a"]).shape[1])
    return Embedder("wordllama", dim, lambda texts: model.embed(texts, norm=True), {"kind": "wordllama"})


def openai_embedder(url: str, model: str, api_key: str = "") -> Embedder:
    if not url or not model:
        raise EmbedderError("retrieve.embedder = 'openai' needs retrieve.embedder_url (e.g. http://127.0.0.1:8000/v1) and retrieve.embedder_model")
    import openai

    client = openai.OpenAI(base_url=url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none", max_retries=1, timeout=60)

    def encode_texts(texts: list[str]) -> np.ndarray:
        try:
            data = client.embeddings.create(model=model, input=texts).data
        except openai.OpenAIError as e:
            raise EmbedderError(f"retrieve.embedder_url {url}: {type(e).__name__}: {e}") from None
        return np.array([d.embedding for d in sorted(data, key=lambda d: d.index)], dtype=np.float32)

    dim = int(encode_texts(["dimension probe"]).shape[1])
    return Embedder(f"openai:{model}", dim, encode_texts, {"kind": "openai", "url": url, "model": model})


def open_embedder(ws: Workspace, cfg: Config) -> Embedder:
    """The embedder [retrieve] names ('corpus' reads the one `londinium index vectors` learned)."""
    from londinium.workspace import default_cache_dir

    r = cfg.retrieve
    if r.embedder == "corpus":
        if not ws.vectors_embedder.is_file():
            raise EmbedderError(f"no corpus embedder at {ws.vectors_embedder}: run `londinium index vectors -w {ws.root}` first")
        return corpus_embedder(ws.vectors_embedder)
    if r.embedder == "model":
        return model_embedder(ws, r.embedder_run or cfg.train.run_name, cfg.serve.device)
    if r.embedder == "sentence-transformers":
        return sentence_transformers_embedder(r.embedder_path)
    if r.embedder == "wordllama":
        return wordllama_embedder(Path(cfg.corpus.cache_dir) if cfg.corpus.cache_dir else default_cache_dir())
    return openai_embedder(r.embedder_url, r.embedder_model, cfg.serve.api_key)
