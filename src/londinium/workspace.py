"""Where every artifact lives, and whether a stage is up to date.

This module is the only place that knows the layout of a workspace; other code asks a `Workspace`
for paths and never joins them by hand:

    londinium-work/
      manifest.json                 one entry per stage: config, input and output hashes
      corpus/   train.jsonl val.jsonl test.jsonl rejections.jsonl report.md report.json
                chars_by_source.png config.toml
      tokenizer/  tokenizer.json (+ transformers files)  report.md report.json config.toml
      shards/   train.bin train.meta.json  val.bin ...  config.toml
      runs/<name>/  checkpoints/  metrics.jsonl  train_loss.png  config.toml
      eval/<run>/  results.json report.md perplexity_by_source.png loss.png config.toml
      eval/compare-<a>-vs-<b>.md .json
      tasks/<task>/  items.jsonl card.json config.toml   (tasks cut from the corpus: the cloze set)
      exports/<run>-step-<N>/        a transformers directory (londinium export); <run>-step-<N>.gguf for GGUF
      exports/<name>.toml            the [export] settings an export was written with
      index/    bm25/ (the BM25 matrices) documents.jsonl spellings.json meta.json config.toml   (londinium index build)
      vectors/  embeddings.npy passages.npy embedder.npz (a corpus-trained embedder) meta.json config.toml   (londinium index vectors)
      bench/<name>/  results.json report.md throughput.png latency.png   (londinium bench serve)
      .locks/<stage>.lock            held while a stage runs (`lock`): a second run of it is refused

A stage is a function of its config and its inputs. `Workspace.up_to_date` says whether a stage's
recorded config and input hashes equal the current ones and its outputs are intact; `record` writes
the entry once the stage has written its outputs (atomically), so an interrupted stage is never
recorded as done. While a stage runs it holds `lock(stage)`, so the same stage (or run, or export)
started again meanwhile is refused with the holder's pid and command instead of crashing half-way.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from londinium.errors import LondiniumError, PathError
from londinium.files import ensure_dir, loads_json, path_kind, remove_stale_temporaries, sha256_file, write_json
from londinium.locks import hold

DEFAULT_WORKSPACE = "londinium-work"
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
# The command that (re)makes each stage's outputs, for "run this again" messages.
STAGE_COMMANDS = {"corpus": "londinium corpus build", "tokenizer": "londinium tokenizer train", "shards": "londinium data prepare",
                  "index": "londinium index build", "vectors": "londinium index vectors"}


def check_run_name(name: str) -> str:
    """`name` when it can name a folder under runs/ (or eval/): no path separators, no '..', no
    control characters, so `--run ../elsewhere` never reads or writes outside the workspace."""
    import re

    from londinium.config import RUN_NAME

    if not isinstance(name, str) or not re.fullmatch(RUN_NAME, name):
        raise PathError(f"run name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter or digit (it names a folder)")
    return name


class StageNotDone(LondiniumError):
    """An upstream artifact is missing, or is not what its stage recorded: the message names the
    command to run again."""


def default_cache_dir() -> Path:
    """Download cache shared by all workspaces: $LONDINIUM_CACHE, else $XDG_CACHE_HOME/londinium."""
    if env := os.environ.get("LONDINIUM_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "londinium"


def reference_tokenizer_dir(cache_dir: Path, name: str) -> Path:
    """Where a reference tokenizer's files (e.g. GPT-2's encoder.json and vocab.bpe) are cached."""
    return Path(cache_dir) / "reference-tokenizers" / name


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __init__(self, root: str | os.PathLike = DEFAULT_WORKSPACE):
        path = Path(root).resolve()
        if path.exists() and not path.is_dir():
            kind = path_kind(path, follow=True)
            raise PathError(f"workspace {path} is a {kind}, but a workspace is a folder; choose another --workspace")
        # Checked now, not at the first write after minutes of work: a file standing in the way.
        blocker = next((p for p in path.parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise PathError(f"workspace {path}: {blocker} is a file, but a folder is needed there; choose another --workspace")
        object.__setattr__(self, "root", path)
        self._refuse_nesting()

    def _refuse_nesting(self) -> None:
        """A workspace may not lie inside another workspace's stage outputs, exports or benchmarks:
        what that workspace does to its own (checkpoint pruning, `train --force`, a rebuilt index,
        a replaced export) would take this one with it, and this one's files would mix into its
        records. (Beside another workspace, or holding one, is fine.)"""
        for parent in self.root.parents:
            if not (parent / MANIFEST).is_file():
                continue
            outer = object.__new__(Workspace)
            object.__setattr__(outer, "root", parent)
            if not outer.manifest():
                continue  # a manifest.json of some other program
            held = {**outer.stage_outputs(), **{p: d for p, d in outer.output_folders().items() if p != parent}}
            for folder, what in held.items():
                if self.root == folder or folder in self.root.parents:
                    relation = "is" if self.root == folder else "lies inside"
                    raise PathError(f"workspace {self.root} {relation} {folder}, {what} of the workspace {parent}; "
                                    "what that workspace replaces or prunes there would take this one with it: "
                                    "choose a --workspace outside it")

    # ---- layout --------------------------------------------------------------------------------
    @property
    def manifest_file(self) -> Path:
        return self.root / MANIFEST

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def stage_config_file(self, stage: str) -> Path:
        """The config a stage actually ran with, saved next to its outputs."""
        return self.stage_dir(stage) / "config.toml"

    # corpus
    @property
    def corpus_dir(self) -> Path:
        return self.stage_dir("corpus")

    def corpus_split(self, split: str) -> Path:
        return self.corpus_dir / f"{split}.jsonl"

    @property
    def corpus_rejections(self) -> Path:
        return self.corpus_dir / "rejections.jsonl"

    @property
    def corpus_report_md(self) -> Path:
        return self.corpus_dir / "report.md"

    @property
    def corpus_report_json(self) -> Path:
        return self.corpus_dir / "report.json"

    @property
    def corpus_chart(self) -> Path:
        return self.corpus_dir / "chars_by_source.png"

    # tokenizer
    @property
    def tokenizer_dir(self) -> Path:
        return self.stage_dir("tokenizer")

    @property
    def tokenizer_file(self) -> Path:
        return self.tokenizer_dir / "tokenizer.json"

    @property
    def tokenizer_report_md(self) -> Path:
        return self.tokenizer_dir / "report.md"

    @property
    def tokenizer_report_json(self) -> Path:
        return self.tokenizer_dir / "report.json"

    @property
    def tokenizer_hf_dir(self) -> Path:
        """The tokenizer as a `transformers` directory (`AutoTokenizer.from_pretrained(dir)`), for exports."""
        return self.tokenizer_dir / "hf"

    # shards
    @property
    def shards_dir(self) -> Path:
        return self.stage_dir("shards")

    def shard_bin(self, split: str) -> Path:
        return self.shards_dir / f"{split}.bin"

    def shard_meta(self, split: str) -> Path:
        return self.shards_dir / f"{split}.meta.json"

    # training runs
    def run_dir(self, name: str = "main") -> Path:
        return self.root / "runs" / check_run_name(name)

    # What training writes in runs/<name>/ (the trackers' folders only when they are on).
    RUN_FILES = ("config.toml", "metrics.jsonl", "train_loss.png", "summary.json", "rl.png", "rl.md")  # rl.*: an RL run's report
    RUN_FOLDERS = ("checkpoints", "tensorboard", "wandb")

    def clear_run(self, name: str) -> None:
        """Delete the run `name` (for `train --force`), under the rule for every output londinium
        replaces (`outputs.check_target`): only a folder that holds what training writes, never a
        link (the old checkpoints would stay behind it, mixed with the new run) nor a folder with the
        user's own files in it. A killed run's temporaries do not count as the user's."""
        import shutil

        from londinium.outputs import check_target, holds_only

        run = self.run_dir(name)
        remove_stale_temporaries(run)
        check_target(run, f"train --force: the folder of run '{name}'", folder=True, keep={},
                     ours=holds_only(self.RUN_FILES, self.RUN_FOLDERS))
        if run.is_dir():
            shutil.rmtree(run)

    def checkpoints_dir(self, name: str = "main") -> Path:
        return self.run_dir(name) / "checkpoints"

    def metrics_file(self, name: str = "main") -> Path:
        return self.run_dir(name) / "metrics.jsonl"

    def loss_plot(self, name: str = "main") -> Path:
        return self.run_dir(name) / "train_loss.png"

    def rl_report(self, name: str) -> tuple[Path, Path]:
        """An RL run's curves and Markdown report (rl/report.py)."""
        return self.run_dir(name) / "rl.png", self.run_dir(name) / "rl.md"

    def run_config_file(self, name: str = "main") -> Path:
        """The full config (all sections) a training run used, vocab_size resolved."""
        return self.run_dir(name) / "config.toml"

    def run_summary_file(self, name: str = "main") -> Path:
        """How a training run ended: its plan, the step reached, any shortfall (train/trainer.py)."""
        return self.run_dir(name) / "summary.json"

    # evaluation
    @property
    def eval_dir(self) -> Path:
        return self.stage_dir("eval")

    def eval_run_dir(self, run: str = "main") -> Path:
        """One run's report card. The stage is recorded as "eval/<run>", so this is its stage_dir."""
        return self.stage_dir(f"eval/{check_run_name(run)}")

    def eval_results(self, run: str = "main") -> Path:
        return self.eval_run_dir(run) / "results.json"

    def eval_report_md(self, run: str = "main") -> Path:
        return self.eval_run_dir(run) / "report.md"

    def eval_compare(self, run_a: str, run_b: str) -> Path:
        """`londinium eval --compare A B` writes this Markdown (and a .json next to it)."""
        return self.eval_dir / f"compare-{check_run_name(run_a)}-vs-{check_run_name(run_b)}.md"

    # tasks cut from the corpus (recorded as "tasks/<task>")
    def task_dir(self, task: str) -> Path:
        return self.stage_dir(f"tasks/{task}")

    def task_items(self, task: str) -> Path:
        """The task's items, one JSON object per line (`londinium.tasks.items`)."""
        return self.task_dir(task) / "items.jsonl"

    def task_card(self, task: str) -> Path:
        """How the task's items were cut, and their counts and baselines."""
        return self.task_dir(task) / "card.json"

    # exports
    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    def export_path(self, run: str, step: int, fmt: str = "hf") -> Path:
        """Default place of an export: a directory for Hugging Face format, one file for GGUF."""
        name = f"{run}-step-{step:06d}"
        return self.exports_dir / (f"{name}.gguf" if fmt == "gguf" else name)

    def export_config_file(self, export: Path) -> Path:
        """The [export] config an export was written with: `exports/<name>.toml`, beside it."""
        return self.exports_dir / f"{Path(export).name}.toml"

    def model_card(self, run: str) -> Path | None:
        """README.md (the model card) of the newest Hugging Face export of `run`, if there is one."""
        if not self.exports_dir.is_dir():
            return None
        cards = sorted(p / "README.md" for p in self.exports_dir.glob(f"{run}-step-*") if (p / "README.md").is_file())
        return cards[-1] if cards else None

    # distillation
    def distill_cache_dir(self, name: str) -> Path:
        """A teacher's top-k cache (`train/distill_cache.py`): distill/<teacher>-top<k>-<key>/."""
        return self.root / "distill" / name

    # the decode step's ahead-of-time libraries (`infer/aot.py`), reused by later processes
    @property
    def compiled_dir(self) -> Path:
        return self.root / "compiled"

    # serving benchmarks
    def bench_dir(self, name: str = "serve") -> Path:
        return self.root / "bench" / check_run_name(name)

    def bench_results(self, name: str = "serve") -> Path:
        return self.bench_dir(name) / "results.json"

    def bench_report_md(self, name: str = "serve") -> Path:
        return self.bench_dir(name) / "report.md"

    def bench_plot(self, name: str = "serve", kind: str = "throughput") -> Path:
        """`kind`: throughput (requests and tokens per second) or latency (TTFT and TPOT percentiles)."""
        return self.bench_dir(name) / f"{kind}.png"

    # search index
    @property
    def index_dir(self) -> Path:
        return self.stage_dir("index")

    @property
    def index_bm25_dir(self) -> Path:
        """The bm25s index (sparse score matrix, vocabulary, parameters)."""
        return self.index_dir / "bm25"

    @property
    def index_documents(self) -> Path:
        """One row per indexed document, in index order: id, split, source, title, period, license."""
        return self.index_dir / "documents.jsonl"

    @property
    def index_spellings(self) -> Path:
        """{folding: {folded term: the spellings of it in the corpus}}, to find a hit's matched words fast."""
        return self.index_dir / "spellings.json"

    @property
    def index_meta(self) -> Path:
        """What the index was built from (the corpus splits' sha256) and its size."""
        return self.index_dir / "meta.json"

    # vector index (retrieve/vectors.py)
    @property
    def vectors_dir(self) -> Path:
        return self.stage_dir("vectors")

    @property
    def vectors_embeddings(self) -> Path:
        """float32 [passages, dim], each row unit length."""
        return self.vectors_dir / "embeddings.npy"

    @property
    def vectors_passages(self) -> Path:
        """int64 [passages, 3]: document number (in the search index's order), start, end."""
        return self.vectors_dir / "passages.npy"

    @property
    def vectors_embedder(self) -> Path:
        """The corpus-trained static embedder (vocabulary, vectors, weights), when retrieve.embedder = 'corpus'."""
        return self.vectors_dir / "embedder.npz"

    @property
    def vectors_meta(self) -> Path:
        """The embedder, the document ids in order, and the sha256 of the corpus splits it embedded."""
        return self.vectors_dir / "meta.json"

    # ---- what no other command may write over ----------------------------------------------------
    def stage_outputs(self) -> dict[Path, str]:
        """The stages' own folders (and the manifest), each with what it holds: a user-named output
        (`export --out`, a bench name) may not be one of them, contain one, or lie inside one."""
        return {self.manifest_file: "the workspace's manifest", self.corpus_dir: "the corpus stage's outputs",
                self.tokenizer_dir: "the tokenizer stage's outputs", self.shards_dir: "the token shards",
                self.root / "runs": "the training runs (every checkpoint)", self.eval_dir: "the evaluation reports",
                self.index_dir: "the search index", self.vectors_dir: "the vector index",
                self.root / "tasks": "the tasks cut from the corpus", self.locks_dir: "the stage locks",
                self.root / "distill": "the teachers' top-k caches", self.compiled_dir: "the compiled decode steps"}

    def output_folders(self) -> dict[Path, str]:
        """Folders that hold user-named outputs: one may lie inside them, but not be or contain them."""
        return {self.root: "the workspace", self.exports_dir: "the exports folder (every export)",
                self.root / "bench": "the benchmarks folder (every benchmark)"}

    # ---- locks ---------------------------------------------------------------------------------
    @property
    def locks_dir(self) -> Path:
        return self.root / ".locks"

    @contextlib.contextmanager
    def lock(self, stage: str) -> Iterator[None]:
        """Hold `stage`'s lock (`train/<run>`, `export/<name>`, `corpus`, ...) for the block; `Busy`
        naming the holder if another process runs it. Under torchrun only rank 0 takes it, for the
        whole job: the ranks of one job must not lock each other out, and rank 0 alone writes."""
        if os.environ.get("RANK", "0") != "0":
            yield
            return
        ensure_dir(self.root, "workspace")  # a place that cannot be written is named as the workspace
        with hold(self.locks_dir / f"{stage}.lock", f"{stage} in workspace {self.root}"):
            yield

    # ---- manifest ------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        import json

        if not self.manifest_file.is_file():
            return {}
        try:
            data = loads_json(self.manifest_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            # A manifest is only a cache of what is done: if it is unreadable, everything re-runs.
            return {}
        # Entries of the wrong shape (a hand-edited file) count as not done, like a missing one.
        def sound(entry: Any) -> bool:
            return isinstance(entry, dict) and all(isinstance(entry.get(k, {}), dict) for k in ("config", "inputs", "outputs"))

        return {k: v for k, v in data.items() if sound(v)} if isinstance(data, dict) else {}

    def _rel(self, path: Path) -> str:
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def hashes(self, paths: Iterable[Path]) -> dict[str, str | None]:
        """sha256 of each path (None when missing), keyed by workspace-relative path."""
        return {self._rel(p): (sha256_file(p) if Path(p).is_file() else None) for p in paths}

    def up_to_date(self, stage: str, config: dict[str, Any], inputs: Iterable[Path]) -> bool:
        """True when `stage` last ran with this config on these exact inputs and its outputs are intact."""
        entry = self.manifest().get(stage)
        if not entry or entry.get("config") != config:
            return False
        if entry.get("inputs") != self.hashes(inputs):
            return False
        outputs = entry.get("outputs", {})
        for rel, digest in outputs.items():
            p = self.root / rel
            if not p.is_file() or sha256_file(p) != digest:
                return False
        return True

    def _manifest_update(self) -> contextlib.AbstractContextManager[None]:
        # Stages of different names run at once (two training runs, an eval beside a training): the
        # manifest's read-modify-write is serialised, or one stage's entry would be lost.
        return hold(self.locks_dir / "manifest.lock", f"a manifest update in {self.root}", wait=True)

    def record(self, stage: str, config: dict[str, Any], inputs: Iterable[Path], outputs: Iterable[Path]) -> None:
        entry = {
            "config": config,
            "inputs": self.hashes(inputs),
            "outputs": self.hashes(outputs),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with self._manifest_update():
            manifest = self.manifest()
            manifest[stage] = entry
            write_json(self.manifest_file, manifest)

    def require_stage(self, stage: str, paths: Iterable[Path]) -> None:
        """Raise StageNotDone unless `stage` finished (it has a manifest entry) and recorded each of
        `paths` as an output with the hash it has on disk now. A later stage reads only what an
        earlier one recorded, so a file that was edited by hand, left half-rebuilt by a killed run
        (new train.jsonl, old val.jsonl) or copied in from elsewhere is never trusted silently."""
        command = f"`{STAGE_COMMANDS.get(stage, stage)} -w {self.root}`"
        entry = self.manifest().get(stage)
        if entry is None:
            missing = [p for p in paths if not Path(p).is_file()]
            what = f"{missing[0]} is missing" if missing else f"no finished {stage} stage is recorded in {self.manifest_file}"
            raise StageNotDone(f"{what}: run {command} first")
        outputs = entry.get("outputs", {})
        for p in paths:
            rel = self._rel(p)
            if rel not in outputs:
                raise StageNotDone(f"{p} is not an output the {stage} stage recorded: run {command} again")
            if not Path(p).is_file():
                raise StageNotDone(f"{p} is missing: run {command} again")
            if sha256_file(p) != outputs[rel]:
                raise StageNotDone(f"{p} changed since the {stage} stage wrote it (edited, or left by an interrupted run): run {command} again")

    def adopt(self, stage: str, outputs: Iterable[Path], config: dict[str, Any] | None = None) -> None:
        """Record files made outside londinium (a corpus written as JSONL by another tool) as the
        outputs of `stage`, so later stages accept them; re-run `adopt` after changing them."""
        self.record(stage, {"adopted": True, **(config or {})}, [], outputs)

    def remove_stale_temporaries(self, stage: str) -> list[Path]:
        """Delete the temporary files that a killed run of `stage` left in its directory (and a killed
        manifest write in the workspace root); a live process's are kept. Called before a stage runs."""
        # In the root only the manifest's: a workspace may be a folder that holds the user's own files.
        return remove_stale_temporaries(self.stage_dir(stage)) + remove_stale_temporaries(self.root, self.manifest_file.name)

    def invalidate(self, stage: str) -> None:
        """Forget that a stage ran (called before a stage starts rewriting its outputs)."""
        with self._manifest_update():
            manifest = self.manifest()
            if manifest.pop(stage, None) is not None:
                write_json(self.manifest_file, manifest)

    def run_stage(
        self,
        stage: str,
        section: Any,
        run: Callable[[], list[Path]],
        inputs: Iterable[Path] = (),
        fingerprint: dict[str, Any] | None = None,
        force: bool = False,
        log: Callable[[str], None] = print,
        config_file: Path | None = None,
    ) -> bool:
        """Run `run()` unless `stage` is up to date; record its outputs. Returns True if it ran.

        `section` is the stage's config dataclass (saved as `<stage>/config.toml`, or `config_file`
        for a stage whose outputs are not a directory of the workspace, such as an export);
        `fingerprint` adds anything else the outputs depend on (e.g. the sources registry's contents).
        The stage's lock is held throughout: a second run of the same stage meanwhile is refused.
        """
        import dataclasses

        from londinium.config import to_toml
        from londinium.files import write_text

        inputs = list(inputs)
        config = {"section": dataclasses.asdict(section), **(fingerprint or {})}
        with self.lock(stage):
            if not force and self.up_to_date(stage, config, inputs):
                where = config_file.parent if config_file else self.stage_dir(stage)
                log(f"{stage}: up to date in {where}; nothing to do (--force re-runs it)")
                return False
            self.invalidate(stage)
            self.remove_stale_temporaries(stage)
            outputs = list(run())
            config_file = config_file or self.stage_config_file(stage)
            write_text(config_file, to_toml(section))
            self.record(stage, config, inputs, [*outputs, config_file])
            return True
