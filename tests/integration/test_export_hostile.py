"""An export directory is untrusted input: hostile or broken variants of a real `londinium export`
are refused with one LondiniumError naming the file, before anything is built from them (a config
asking for terabytes allocates nothing), and `serve --export` refuses them before it listens.

The variants are drawn by hypothesis from families (config.json values, the shard index, the
safetensors files, the tokenizer), each in three states of the `londinium.json` record: left as
exported (stale), removed (a plain transformers directory), or rewritten to match (an attacker who
updates the record too, so only the structural checks stand).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from serve_helpers import free_port, trained_run

from londinium.config import Config
from londinium.errors import LondiniumError
from londinium.export.run import export_run
from londinium.files import sha256_file
from londinium.model.from_hf import load_export
from londinium.model.hf_check import TOKENIZER_BYTES, check_export
from londinium.model.load import load_run

pytestmark = pytest.mark.usefixtures("one_thread")

RECORD = "londinium.json"
INDEX = "model.safetensors.index.json"


def _export(ws, out: Path, max_shard_mb: float | None = None) -> Path:
    cfg = Config()
    if max_shard_mb is not None:
        cfg.export.max_shard_mb = max_shard_mb
    export_run(ws, cfg, run=trained_run(ws), checkpoint="latest", fmt="hf", out=out, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def exports(tiny_workspace, tmp_path_factory) -> dict[str, Path]:
    """One export in a single model.safetensors and one in shards with an index."""
    root = tmp_path_factory.mktemp("exports")
    single = _export(tiny_workspace, root / "single")
    sharded = _export(tiny_workspace, root / "sharded", max_shard_mb=0.06)
    assert (sharded / INDEX).is_file() and not (single / INDEX).exists()
    return {"single": single, "sharded": sharded}


# ---- the mutations: each edits a copy and returns the name of the file it broke ---------------------

def _config(d: Path) -> dict:
    return json.loads((d / "config.json").read_text())


def _shape_keys(config: dict) -> list[str]:
    """config.json keys that decide a tensor's shape or count (so no weights can agree with a change)."""
    if config["model_type"] == "gpt2":
        return ["n_layer", "n_embd", "n_positions", "vocab_size", "n_inner"]
    return ["num_hidden_layers", "hidden_size", "max_position_embeddings", "vocab_size", "intermediate_size"]


BAD_VALUES = st.one_of(
    st.sampled_from([0, -1, -(2**31), 1024, 65536, 2**20, 2**40, 10**30, 2.5, 1e308, True, None, "64", [64], {"n": 1}]),
    st.integers(min_value=-(2**70), max_value=2**70),
)


def mutate_config_value(d: Path, data) -> str:
    config = _config(d)
    key = data.draw(st.sampled_from(_shape_keys(config)), label="key")
    value = data.draw(BAD_VALUES.filter(lambda v: v != config.get(key) and not (key == "n_inner" and v is None)), label="value")
    config[key] = value
    (d / "config.json").write_text(json.dumps(config))
    return "config.json"


def mutate_config_heads(d: Path, data) -> str:
    """Heads that no width can take: zero, negative, not dividing the width, not a number."""
    config = _config(d)
    key = "n_head" if config["model_type"] == "gpt2" else "num_attention_heads"
    config[key] = data.draw(st.sampled_from([0, -4, 7, 10**9, "2", 2.0, None, [2]]), label="heads")
    (d / "config.json").write_text(json.dumps(config))
    return "config.json"


def mutate_config_shape(d: Path, data) -> str:
    """A config.json that is no object at all, or empty."""
    text = data.draw(st.sampled_from(['[{"model_type": "gpt2"}]', '"gpt2"', "{}", "null", "{", '{"model_type": "gpt2"}']))
    (d / "config.json").write_text(text)
    return "config.json"


def _shards(d: Path) -> list[Path]:
    return sorted(d.glob("*.safetensors"))


def mutate_truncate(d: Path, data) -> str:
    f = data.draw(st.sampled_from(_shards(d)), label="file")
    size = f.stat().st_size
    f.write_bytes(f.read_bytes()[:data.draw(st.integers(0, size - 1), label="keep")])
    return f.name


def mutate_garbage(d: Path, data) -> str:
    f = data.draw(st.sampled_from(_shards(d)), label="file")
    head = data.draw(st.sampled_from([b"", (2**63).to_bytes(8, "little"), (10**6).to_bytes(8, "little")]), label="head")
    f.write_bytes(head + data.draw(st.binary(min_size=0, max_size=300), label="bytes"))
    return f.name


def _rewrite_tensor(d: Path, data, change) -> str:
    f = data.draw(st.sampled_from(_shards(d)), label="file")
    tensors = load_file(str(f))
    name = data.draw(st.sampled_from(sorted(tensors)), label="tensor")
    tensors[name] = change(tensors[name])
    save_file(tensors, str(f), metadata={"format": "pt"})
    return f.name


def mutate_nan(d: Path, data) -> str:
    bad = data.draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]), label="value")
    return _rewrite_tensor(d, data, lambda t: t.flatten().index_fill(0, torch.tensor([0]), bad).reshape(t.shape))


def mutate_dtype(d: Path, data) -> str:
    dtype = data.draw(st.sampled_from([torch.int8, torch.uint8, torch.int32, torch.float64, torch.bool]), label="dtype")
    return _rewrite_tensor(d, data, lambda t: t.to(dtype))


def mutate_shape(d: Path, data) -> str:
    how = data.draw(st.sampled_from(["drop a row", "add a row", "flatten", "transpose"]), label="how")
    return _rewrite_tensor(d, data, lambda t: (
        t[:-1] if how == "drop a row" and t.shape[0] > 1 else
        torch.cat([t, t[:1]]) if how in ("drop a row", "add a row") else
        t.flatten()[:-1] if how == "flatten" else
        (t.t().contiguous() if t.ndim == 2 and t.shape[0] != t.shape[1] else torch.cat([t, t[:1]]))))


def mutate_index(d: Path, data) -> str:
    """Shard paths that leave the directory (absolute, `..`, a link out), a missing shard, a wrong map."""
    index = json.loads((d / INDEX).read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    outside = d.parent / "outside.safetensors"
    shutil.copy(d / shard, outside)  # the very tensors, but not in the export: still refused
    how = data.draw(st.sampled_from(["absolute", "dotdot", "link out", "missing shard", "list", "wrong shard",
                                     "unknown tensor"]), label="how")
    if how == "link out":
        (d / shard).unlink()
        (d / shard).symlink_to(outside)
        return shard
    if how == "missing shard":
        (d / shard).unlink()
        return shard
    for name, file in index["weight_map"].items():
        if file == shard:
            index["weight_map"][name] = {"absolute": str(outside), "dotdot": "../outside.safetensors",
                                         "list": [file], "wrong shard": sorted(set(index["weight_map"].values()))[-1],
                                         "unknown tensor": file}[how]
    if how == "unknown tensor":
        index["weight_map"]["model.extra.weight"] = shard
    (d / INDEX).write_text(json.dumps(index))
    return INDEX


def mutate_tokenizer_ids(d: Path, data) -> str:
    """Two tokens' ids swapped: a model that answers with the wrong words (only the record sees it)."""
    tok = json.loads((d / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = data.draw(st.lists(st.sampled_from(sorted(vocab)), min_size=2, max_size=2, unique=True), label="tokens")
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (d / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    return "tokenizer.json"


def mutate_tokenizer_size(d: Path, data) -> str:
    """A tokenizer.json far past what the vocabulary needs, refused unread (the tokenizers library
    holds ~45 times the file: 144 MB of merges took 6.6 GB and 49 s); trailing spaces keep it JSON."""
    fixed, per_token = TOKENIZER_BYTES
    path = d / "tokenizer.json"
    surplus = fixed + per_token * _config(d)["vocab_size"] - path.stat().st_size + 1
    with path.open("ab") as f:
        f.write(b" " * (surplus + data.draw(st.integers(0, 4096), label="bytes over")))
    return "tokenizer.json"


STRUCTURAL = [mutate_config_value, mutate_config_heads, mutate_config_shape, mutate_truncate, mutate_garbage,
              mutate_nan, mutate_dtype, mutate_shape, mutate_tokenizer_size]


def _rerecord(d: Path) -> None:
    """What an attacker who also edits londinium.json writes: hashes that match the files now."""
    record = json.loads((d / RECORD).read_text())
    record["export"]["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                                 for p in sorted(d.iterdir()) if p.is_file() and p.name != RECORD}
    (d / RECORD).write_text(json.dumps(record))


def _refused(directory: Path, broken: str) -> str:
    with pytest.raises(LondiniumError) as caught:
        load_export(directory)
    message = str(caught.value)
    assert "\n" not in message and broken in message, message
    return message


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_variants_of_an_export_are_refused_naming_the_file(exports, data) -> None:
    kind = data.draw(st.sampled_from(["single", "sharded"]), label="export")
    families = STRUCTURAL + ([mutate_index] if kind == "sharded" else [])
    mutate = data.draw(st.sampled_from([*families, mutate_tokenizer_ids]), label="mutation")
    record = "stale" if mutate is mutate_tokenizer_ids else data.draw(st.sampled_from(["stale", "removed", "rewritten"]),
                                                                      label="record")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "export"
        shutil.copytree(exports[kind], d, symlinks=True)
        broken = mutate(d, data)
        if record == "removed":
            (d / RECORD).unlink()
        elif record == "rewritten":
            _rerecord(d)
        _refused(d, broken)


def test_an_export_path_that_is_no_directory_is_named_by_its_kind(tmp_path) -> None:
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    with pytest.raises(LondiniumError, match=f"^{re.escape(str(fifo))}: a FIFO, not a directory; give a directory"):
        check_export(fifo)
    with pytest.raises(LondiniumError, match="no such directory"):
        check_export(tmp_path / "missing")


def test_a_config_asking_for_terabytes_is_refused_by_arithmetic(exports, tmp_path) -> None:
    """13 TB described over a ~1 MB directory: refused from the numbers, nothing built (the
    serve test below holds a process's peak memory to this for a plausible 1,024 layers)."""
    d = shutil.copytree(exports["single"], tmp_path / "huge")
    config = _config(d)
    for key in ("n_layer", "num_hidden_layers"):
        if key in config:
            config[key] = 1024
    for key in ("n_embd", "hidden_size"):
        if key in config:
            config[key] = 16384  # 1024 x 12 x 16384^2 float32: 13 TB
    (d / "config.json").write_text(json.dumps(config))
    (d / RECORD).unlink()
    message = _refused(d, "config.json")
    assert "describes a model of" in message and "do not belong together" in message


def test_the_good_exports_load_with_the_runs_logits_and_are_verified(tiny_workspace, exports, tmp_path) -> None:
    trained = load_run(tiny_workspace, run=trained_run(tiny_workspace), checkpoint="latest")
    x = torch.randint(0, trained.tokenizer.get_vocab_size(), (1, 20))
    said: list[str] = []
    for d in exports.values():
        checked = check_export(d, say=said.append)
        assert checked.verified
        model, _ = load_export(checked)
        assert torch.equal(model(x)[0], trained.model(x)[0])
    assert said == []
    plain = shutil.copytree(exports["sharded"], tmp_path / "plain")
    (plain / RECORD).unlink()  # a plain transformers directory loads too, and says it is unverified
    checked = check_export(plain, say=said.append)
    assert not checked.verified and len(said) == 1 and RECORD in said[0]
    assert torch.equal(load_export(checked)[0](x)[0], trained.model(x)[0])


@pytest.mark.parametrize("layout, dtype", [("llama", "bfloat16"), ("mixtral", "float16"), ("gpt2", "float32")])
def test_every_layout_and_dtype_passes_the_check_and_loads_its_weights(tiny_workspace, tmp_path, layout, dtype) -> None:
    """The parameter arithmetic and the meta model agree with what the exporter writes for each
    layout (untied Llama with grouped-query attention and bias, Mixtral's experts, GPT-2)."""
    from helpers.export_models import GPT2, LLAMA_GQA, trained_model

    from londinium.config import GenerateConfig
    from londinium.export.hf import write_hf

    model = {"llama": {**LLAMA_GQA, "bias": True}, "mixtral": {**LLAMA_GQA, "n_experts": 4, "top_k": 2},
             "gpt2": GPT2}[layout]
    trained = trained_model(tiny_workspace, **model)
    write_hf(tmp_path, trained, dtype, GenerateConfig(), max_shard_mb=0.05)
    back, _ = load_export(check_export(tmp_path, say=lambda m: None))
    for name, t in trained.model.state_dict().items():
        assert torch.equal(back.state_dict()[name], t.to(getattr(torch, dtype)).float()), name


# ---- the real CLI: refused before the port opens ---------------------------------------------------


# `python -m londinium`, reporting at exit the process's own peak resident memory (VmHWM belongs to
# the program after exec; rusage's maxrss would include the test process it was forked from).
_WITH_PEAK = ("import atexit, runpy, sys; atexit.register(lambda: print('peak-kib', next(l.split()[1] for l in "
              "open('/proc/self/status') if l.startswith('VmHWM')), file=sys.stderr)); "
              "runpy.run_module('londinium', run_name='__main__', alter_sys=True)")


def _serve(directory: Path) -> tuple[int, str, float]:
    """`londinium serve --export DIR` as a process: (exit code, its stderr, its peak RSS in MiB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", _WITH_PEAK, "serve", "--export", str(directory), "--port", str(free_port())],
                       capture_output=True, text=True, timeout=120, env=env)
    peak = [line for line in r.stderr.splitlines() if line.startswith("peak-kib ")]
    return r.returncode, r.stderr, int(peak[0].split()[1]) / 1024


def _break(d: Path, how: str) -> str:
    """Representatives of the issue's broken exports; returns the file named in the refusal."""
    config = _config(d)
    if how == "1,024 layers":  # plausible: ~3 GB of float32 blocks over a ~1 MB export
        config.update({k: 1024 for k in ("n_layer", "num_hidden_layers") if k in config})
        config.update({k: 256 for k in ("n_embd", "hidden_size") if k in config})
        config.update({k: 1024 for k in ("n_inner", "intermediate_size") if config.get(k)})
    elif how == "zero heads":
        config.update({k: 0 for k in ("n_head", "num_attention_heads") if k in config})
    elif how == "a list for an object":
        config = [config]
    elif how in ("truncated", "garbage"):
        f = d / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2] if how == "truncated" else os.urandom(4096))
        return f.name
    else:  # "index out"
        index = json.loads((d / INDEX).read_text())
        index["weight_map"] = {k: "../" + v for k, v in index["weight_map"].items()}
        (d / INDEX).write_text(json.dumps(index))
        return INDEX
    (d / "config.json").write_text(json.dumps(config))
    (d / RECORD).unlink()  # so the config itself is judged, not its hash
    return "config.json"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from Linux's /proc")
@pytest.mark.parametrize("how", ["1,024 layers", "index out"])
def test_serve_refuses_a_broken_export_before_it_listens(exports, tmp_path, how) -> None:
    d = shutil.copytree(exports["sharded" if how == "index out" else "single"], tmp_path / "bad", symlinks=True)
    broken = _break(d, how)
    rc, err, peak_mib = _serve(d)
    errors = [line for line in err.splitlines() if line.startswith("londinium: error:")]
    assert rc == 2 and len(errors) == 1 and broken in errors[0] and "Traceback" not in err, err
    assert "http://" not in err and "Uvicorn running" not in err, err  # it never got to listening
    # ~300 MiB is Python and torch; before the check existed, the 1,024 layers peaked at ~20 GB (docs/LOG.md)
    assert peak_mib < 1024, f"peak RSS {peak_mib:.0f} MiB: something was built before the check"


@pytest.mark.parametrize("how", ["zero heads", "a list for an object", "truncated", "garbage"])
def test_the_serve_loader_refuses_the_issues_broken_exports_before_the_port(exports, tmp_path, how) -> None:
    """What `serve` calls before it listens (the two cases above run the whole command)."""
    from londinium.serve.server import export_loader

    d = shutil.copytree(exports["single"], tmp_path / "bad")
    broken = _break(d, how)
    with pytest.raises(LondiniumError, match=re.escape(broken)):
        export_loader(d, "cpu")
