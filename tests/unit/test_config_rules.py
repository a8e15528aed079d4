"""Every config value is checked when the config is loaded, by the rule declared next to its field:
any value either loads or is a ConfigError naming `section.key` (never another exception), and
`config show` and the stages refuse the same values with the same message."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from londinium.config import MIN_VOCAB, RELATIONS, SECTIONS, Config, Rule, load_config, validate
from londinium.errors import ConfigError
from londinium.tokenizer.codec import SPECIAL_TOKENS

FIELDS = [(name, f.name) for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]

# Values of every kind TOML can hold, and the edges that broke stages before: NaN, inf, 0, negatives,
# huge ints, empty strings, NUL, lone surrogates (bad bytes in argv), nested lists and tables.
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 65535, 65536]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 0.999999, 1e-300, 1e300, float("nan"), float("inf")]),
    st.text(max_size=12),
    st.sampled_from(["", "auto", "cpu", "cuda:0", "best", "rope", "hf", "q8_0", "a\x00b", "\udcff", "x/../y"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=3), scalars, max_size=2))


def test_every_field_declares_a_doc_and_a_rule():
    for name, key in FIELDS:
        f = next(f for f in dataclasses.fields(SECTIONS[name]) if f.name == key)
        assert f.metadata.get("doc") and isinstance(f.metadata.get("rule"), Rule), f"{name}.{key}"


def test_the_defaults_and_every_preset_pass_their_own_rules():
    validate(Config())
    for preset in ("tiny", "small", "slm", "regular"):
        load_config(preset=preset)


def test_min_vocab_counts_the_special_tokens():
    assert MIN_VOCAB == 256 + len(SPECIAL_TOKENS)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=values)
def test_any_value_of_any_field_loads_or_is_a_config_error_naming_it(field, value):
    name, key = field
    cfg = Config()
    setattr(getattr(cfg, name), key, value)  # what a library caller can do
    try:
        validate(cfg)
    except ConfigError as e:
        assert f"{name}.{key}" in str(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=values)
def test_any_value_in_a_file_loads_or_is_a_config_error_naming_it(tmp_path: Path, field, value):
    name, key = field
    try:
        text = tomli_w.dumps({name: {key: value}})
    except (TypeError, ValueError, UnicodeEncodeError):
        return  # not representable in TOML (tomli_w refuses NaN in tables, surrogates): --set covers them
    f = tmp_path / "c.toml"
    f.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_config(f)
    except ConfigError as e:
        assert f"{name}.{key}" in str(e) or "not valid TOML" in str(e) or "not UTF-8" in str(e)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), raw=st.text(max_size=20))
def test_any_set_text_loads_or_is_a_config_error_naming_it(field, raw):
    name, key = field
    try:
        load_config(None, [f"{name}.{key}={raw}"])
    except ConfigError as e:
        assert f"{name}.{key}" in str(e)


@pytest.mark.parametrize("override, message", [
    ("train.learning_rate=-1", "train.learning_rate = -1.0: must be > 0"),
    ("train.learning_rate=inf", "train.learning_rate = inf: must be a finite number"),
    ("train.beta1=1.5", "train.beta1 = 1.5: must be in [0, 1)"),
    ("corpus.num_perm=0", "corpus.num_perm = 0: must be in [16, 4096]"),
    ("corpus.max_doc_chars=0", "corpus.max_doc_chars = 0: must be >= 1"),
    ("corpus.download_timeout_s=0", "corpus.download_timeout_s = 0.0: must be in (0, 604800]"),
    ("corpus.download_retries=-1", "corpus.download_retries = -1"),
    ("corpus.download_timeout_s=1e300", "corpus.download_timeout_s = 1e+300: must be in (0, 604800]"),  # a Timer overflows
    ("corpus.max_file_mb=1e303", "corpus.max_file_mb = 1e+303"),  # bytes would be inf
    ("serve.port=0", "serve.port = 0: must be in [1, 65535]"),
    ("serve.port=65536", "serve.port = 65536"),
    ("serve.max_running=0", "serve.max_running = 0"),
    ("serve.shutdown_timeout_s=-1", "serve.shutdown_timeout_s = -1.0"),
    ("export.format='onnx'", "export.format = 'onnx': must be one of 'hf', 'gguf'"),
    ("model.positions='alibi'", "model.positions = 'alibi'"),
    ("eval.temperatures=[]", "eval.temperatures = []: must not be empty"),
    ("generate.top_p=0", "generate.top_p = 0.0: must be in (0, 1]"),
    ("train.run_name='../x'", "train.run_name = '../x'"),
    ("train.device='gpu'", "train.device = 'gpu'"),
])
def test_out_of_range_values_are_named_with_value_and_rule(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)


@pytest.mark.parametrize("overrides, keys", [
    (["corpus.val_fraction=0.5", "corpus.test_fraction=0.5"], ["corpus.val_fraction", "corpus.test_fraction", "< 1"]),
    (["model.n_head=5"], ["model.n_embd = 384", "model.n_head = 5", "divisible"]),
    (["model.n_kv_head=4"], ["model.n_head = 6", "model.n_kv_head = 4"]),
    (["model.n_kv_head=12"], ["model.n_kv_head = 12"]),
    (["model.n_experts=4", "model.top_k=5"], ["model.top_k = 5", "model.n_experts = 4"]),
    (["model.positions='rope'", "model.n_embd=390", "model.n_head=6"], ["even head size"]),
    (["export.format='gguf'", "export.dtype='bfloat16'"], ["export.dtype = 'bfloat16'", "gguf takes"]),
])
def test_relations_between_fields_name_every_key(overrides, keys):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    for k in keys:
        assert k in str(e.value)


def test_every_relation_names_fields_that_exist():
    for r in RELATIONS:
        for k in r.keys:
            section, key = k.split(".")
            assert key in {f.name for f in dataclasses.fields(SECTIONS[section])}, k


@pytest.mark.parametrize("argv", [
    ["config", "show"],
    ["tokenizer", "train"],
    ["data", "prepare"],
    ["train"],
    ["corpus", "build"],
    ["model", "info"],
    ["eval"],
    ["generate", "--prompt", "x"],
    ["chat"],
    ["quickstart"],
])
def test_config_show_and_every_stage_refuse_a_value_with_the_same_line(tmp_path: Path, argv):
    cmd = [sys.executable, "-m", "londinium", *argv, "-w", str(tmp_path / "ws"), "--set", "train.beta1=1.5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "londinium: error: --set: train.beta1 = 1.5: must be in [0, 1)\n"
    assert proc.stdout == ""


def test_a_value_set_in_python_is_held_to_the_same_rule_by_the_stage(tmp_path: Path):
    from londinium.config import TrainConfig
    from londinium.train.schedule import plan_batches

    with pytest.raises(ConfigError, match=r"train.batch_size = 0: must be >= 1"):
        plan_batches(TrainConfig(batch_size=0), 32, 1)


def test_values_nested_too_deeply_are_a_config_error(tmp_path: Path):
    deep = "[" * 5000 + "]" * 5000  # tomllib recurses, and would raise RecursionError
    with pytest.raises(ConfigError, match="train.max_steps"):
        load_config(None, [f"train.max_steps={deep}"])
    f = tmp_path / "deep.toml"
    f.write_text(f"[train]\nmax_steps = {deep}\n")
    with pytest.raises(ConfigError, match="not valid TOML: nested too deeply"):
        load_config(f)
