"""A config that loads never makes a stage crash: values drawn from each field's own rule (its
bounds, its choices, values near the edges) run the corpus, tokenizer, shards, training, eval and
generation stages on a tiny corpus to the end of their first step, or stop with a LondiniumError that says what to do,
never another exception. Sizes are capped where the rule allows more than a test can afford; the
memory check covers the rest."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import pytest
from helpers.prose import prose
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from londinium.config import SECTIONS, Config, load_config
from londinium.errors import ConfigError, LondiniumError
from londinium.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# Where a rule allows more than a test affords (memory, minutes), the drawn value is capped.
CAPS = {
    "model.n_layer": 2, "model.n_head": 4, "model.n_kv_head": 4, "model.n_embd": 64, "model.context": 48,
    "model.mlp_ratio": 4, "model.n_experts": 4, "model.top_k": 4, "train.batch_size": 4, "train.batch_tokens": 512,
    "train.warmup_steps": 4, "train.eval_every": 3, "train.eval_batches": 2, "train.keep_last": 3, "train.log_every": 3,
    "train.threads": 1, "train.max_minutes": 0.02, "train.max_tokens": 4096, "train.max_steps": 2, "corpus.num_perm": 256, "corpus.shingle_words": 8,
    "corpus.max_doc_chars": 5000, "corpus.min_chars": 500, "tokenizer.min_frequency": 5, "data.encode_batch_docs": 2000,
}
FIXED = {  # kept as they are: fetching, devices, compilation, trackers and names are checked elsewhere
    "corpus.sources", "corpus.cache_dir", "corpus.download_timeout_s", "corpus.download_retries", "tokenizer.compare_gpt2",
    "train.device", "train.compile", "train.wandb", "train.tensorboard", "train.run_name", "train.resume",
    "train.peak_tflops", "model.vocab_size",
}


def _field_values(section: str, f: dataclasses.Field) -> st.SearchStrategy:
    key, rule, default = f"{section}.{f.name}", f.metadata["rule"], getattr(SECTIONS[section](), f.name)
    if isinstance(default, list):  # stop strings; eval's lists are drawn by their tests
        return st.lists(st.text(min_size=1, max_size=3), max_size=2) if key == "generate.stop" else st.just(default)
    if rule.choices:
        return st.sampled_from(rule.choices)
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, (int, float)):
        lo = rule.ge if rule.ge is not None else rule.gt if rule.gt is not None else 0
        hi = rule.le if rule.le is not None else rule.lt if rule.lt is not None else max(10 * abs(default), 10)
        hi = min(hi, CAPS.get(key, hi))
        if isinstance(default, int):
            lo, hi = int(math.ceil(lo)) + (1 if rule.gt is not None else 0), int(hi) - (1 if rule.lt is not None and rule.le is None else 0)
            return st.one_of(st.sampled_from(sorted({lo, hi, min(max(default, lo), hi)})), st.integers(lo, hi))
        edge = [x for x in (lo, hi, float(default), lo + 1e-6, hi - 1e-6) if (rule.gt is None or x > rule.gt)
                and (rule.lt is None or x < rule.lt) and lo <= x <= hi]
        inner = st.floats(lo, hi, exclude_min=rule.gt is not None, exclude_max=rule.lt is not None)
        return st.one_of(st.sampled_from(edge), inner) if edge else inner
    return st.just(default)


def _overrides(section: str) -> st.SearchStrategy:
    fields = [f for f in dataclasses.fields(SECTIONS[section]) if f"{section}.{f.name}" not in FIXED]
    return st.fixed_dictionaries({f"{section}.{f.name}": _field_values(section, f) for f in fields})


def _load(values: dict) -> Config:
    try:
        return load_config(None, [f"{k}={json.dumps(v)}" for k, v in values.items()])
    except ConfigError as e:
        for k in values:  # refused by a relation between the drawn values: named, then not a stage run
            if k in str(e):
                assume(False)
        raise


def _stage(run) -> None:
    """Run a stage; `--hypothesis-show-statistics` shows how many examples ran and why others stopped."""
    try:
        run()
        event("ran")
    except LondiniumError as e:
        event("refused: " + str(e)[:70])  # a clear, named refusal (a split too small, a diverging learning rate...) is allowed


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cfg-texts")
    folder = root / "texts"
    folder.mkdir()
    for i in range(6):
        (folder / f"t{i}.txt").write_text(f"TEXT {i}\n\n" + prose(200 + i, 14), encoding="utf-8")
    (root / "sources.toml").write_text('[[source]]\nid = "s"\nkind = "local"\nlocation = "texts"\nperiod = [1600, 1600]\n',
                                       encoding="utf-8")
    return root


_counter = itertools.count()
# filter_too_much: most drawn head counts do not divide the drawn width, which the relations refuse
SETTINGS = dict(max_examples=10, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])


@settings(**SETTINGS)
@given(values=_overrides("corpus"))
def test_any_loaded_corpus_config_builds_or_refuses_by_name(texts: Path, values: dict):
    from londinium.corpus.build import build_corpus

    values.update({"corpus.sources": str(texts / "sources.toml"), "corpus.cache_dir": str(texts / "cache")})
    cfg = _load(values)
    _stage(lambda: build_corpus(Workspace(texts / f"ws{next(_counter)}"), cfg.corpus))


@settings(**SETTINGS)
@given(tok=_overrides("tokenizer"), data=_overrides("data"))
def test_any_loaded_tokenizer_and_data_config_runs_or_refuses_by_name(tiny_workspace, tmp_path_factory, tok: dict, data: dict):
    import shutil

    from londinium.data.shards import prepare_shards
    from londinium.tokenizer.train import train_tokenizer

    cfg = _load({**tok, **data})
    ws = Workspace(tmp_path_factory.mktemp("cfg-tok") / "ws")
    shutil.copytree(tiny_workspace.corpus_dir, ws.corpus_dir)
    ws.adopt("corpus", [ws.corpus_split(s) for s in ("train", "val", "test")])
    quiet = dict(log=lambda m: None)
    _stage(lambda: (train_tokenizer(ws, cfg.tokenizer, **quiet), prepare_shards(ws, cfg.data, **quiet)))


@settings(**SETTINGS)
@given(model=_overrides("model"), train=_overrides("train"))
def test_any_loaded_model_and_train_config_trains_a_step_or_refuses_by_name(tiny_workspace, model: dict, train: dict):
    from londinium.train.trainer import train as run_training

    cfg = _load({**model, **train, "train.run_name": f"cfg-{next(_counter)}"})
    _stage(lambda: run_training(tiny_workspace, cfg, log=lambda m: None))


def test_a_model_too_big_for_the_machine_is_refused_before_allocating(tiny_workspace):
    from londinium.train.trainer import train as run_training

    cfg = load_config(None, ["model.n_layer=1024", "model.n_embd=65536", "model.n_head=64", "model.context=4096",
                             "train.run_name=cfg-huge", "train.max_steps=1"])
    with pytest.raises(ConfigError, match=r"training this model needs about [\d,.]+ GiB.*more than the"):
        run_training(tiny_workspace, cfg, log=lambda m: None)


EVAL_CAPS = {"eval.max_docs": 4, "eval.stride": 32, "eval.batch_size": 4, "eval.prompts": 2, "eval.prompt_chars": 400,
             "eval.reference_words": 40, "eval.samples_per_prompt": 2, "eval.max_new_tokens": 8, "eval.contamination_ngram": 12,
             "eval.cloze_items": 200}
GENERATE_CAPS = {"generate.max_tokens": 16, "generate.top_k": 600, "generate.no_repeat_ngram_size": 6, "generate.chat_window": 64}


@pytest.fixture(scope="module")
def trained(tiny_workspace):
    """A two-step run (context 32) of the shared tiny workspace, for the eval and generate stages."""
    from londinium.train.trainer import train as run_training

    cfg = load_config(None, ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.context=32",
                             "train.batch_size=4", "train.max_steps=2", "train.eval_every=2", "train.eval_batches=1",
                             "train.run_name=cfg-eval"])
    run_training(tiny_workspace, cfg, log=lambda m: None)
    return tiny_workspace, cfg


@settings(**SETTINGS)
@given(values=_overrides("eval"), temperatures=st.lists(st.sampled_from([0.0, 1e-6, 0.7, 2.0, 100.0]), min_size=1, max_size=3))
def test_any_loaded_eval_config_writes_a_report_or_refuses_by_name(trained, values: dict, temperatures: list):
    from londinium.eval.run import evaluate

    ws, base = trained
    for key, cap in EVAL_CAPS.items():
        values[key] = min(values[key], cap) if isinstance(values[key], (int, float)) else values[key]
    values.update({"eval.temperatures": temperatures, "eval.splits": ["val"], "eval.checkpoint": "latest",
                   "model.context": 32, "train.run_name": "cfg-eval"})
    cfg = _load(values)
    cfg.model = base.model
    _stage(lambda: evaluate(ws, cfg, force=True, log=lambda m: None, show_progress=False))


@settings(**SETTINGS)
@given(values=_overrides("generate"), prompt=st.sampled_from(["", "Thou", "The king " * 3]))
def test_any_loaded_generate_config_generates_or_refuses_by_name(trained, values: dict, prompt: str):
    from londinium.infer import Engine, SamplingParams

    ws, _ = trained
    for key, cap in GENERATE_CAPS.items():
        values[key] = min(values[key], cap)
    cfg = _load({**values, "generate.run": "cfg-eval", "generate.checkpoint": "latest"})
    engine = Engine.from_workspace(ws, run=cfg.generate.run, checkpoint=cfg.generate.checkpoint)
    _stage(lambda: engine.generate([prompt], SamplingParams.from_config(cfg.generate)))
