"""The typed config: defaults < preset < file < --set, and every mistake named."""

from pathlib import Path

import pytest

from londinium.config import PRESETS, Config, load_config, parse_override, to_toml
from londinium.errors import ConfigError


def test_defaults_load_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.preset == ""
    assert cfg.corpus.min_chars > 0


def test_resolution_order_is_defaults_then_preset_then_file_then_set(tmp_path: Path):
    f = tmp_path / "londinium.toml"
    f.write_text('preset = "tiny"\n[model]\nn_layer = 3\n[train]\nmax_steps = 50\n')
    cfg = load_config(f, ["train.max_steps=7"])
    assert cfg.preset == "tiny"
    assert cfg.model.n_embd == PRESETS["tiny"]["model"]["n_embd"]  # from the preset
    assert cfg.model.n_layer == 3  # the file beats the preset
    assert cfg.train.max_steps == 7  # --set beats the file


def test_cli_preset_beats_the_preset_named_in_the_file(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text('preset = "tiny"\n')
    cfg = load_config(f, preset="slm")
    assert cfg.preset == "slm"
    assert cfg.model.n_layer == PRESETS["slm"]["model"]["n_layer"]


def test_unknown_key_names_the_key_and_the_section(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nmax_stepz = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'max_stepz' in section \[train\]") as e:
        load_config(f)
    assert str(f) in str(e.value)


def test_unknown_section_is_an_error(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text("[trian]\nmax_steps = 5\n")
    with pytest.raises(ConfigError, match=r"unknown section \[trian\]"):
        load_config(f)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_steps=abc", "train.max_steps: expected int"),
        ("train.compile=1", "train.compile: expected true or false"),
        ("max_steps=3", "expected section.key=value"),
        ("model.n_layer=true", "model.n_layer: expected an integer"),
    ],
)
def test_bad_overrides_are_named(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_override_values_are_read_as_toml_literals_or_strings():
    assert parse_override("train.learning_rate=3e-4") == ("train", "learning_rate", 3e-4)
    assert parse_override("train.compile=true") == ("train", "compile", True)
    assert parse_override("corpus.sources=my/sources.toml") == ("corpus", "sources", "my/sources.toml")
    # ints are accepted where floats are expected
    assert load_config(None, ["train.learning_rate=1"]).train.learning_rate == 1.0


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny"):
        load_config(preset="huge")


def test_invalid_toml_names_the_file(tmp_path: Path):
    f = tmp_path / "bad.toml"
    f.write_text("[train\n")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_config(f)
    f.write_bytes(b'[train]\nrun_name = "\xff"\n')
    with pytest.raises(ConfigError, match="bad.toml is not UTF-8 text"):
        load_config(f)
    with pytest.raises(ConfigError, match="missing.toml does not exist"):
        load_config(tmp_path / "missing.toml")


def test_rendered_toml_round_trips_and_documents_every_field(tmp_path: Path):
    cfg = load_config(preset="small", overrides=["train.max_steps=123"])
    text = to_toml(cfg)
    f = tmp_path / "round.toml"
    f.write_text(text)
    again = load_config(f)
    assert again == cfg
    # every field carries a one-line doc comment above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith(("#", "[")):
            assert lines[i - 1].startswith("# "), f"no doc comment for: {line}"


def test_a_saved_config_as_base_keeps_its_values_unless_given_explicitly(tmp_path: Path):
    """What `train --resume` builds on: a run's saved config over the defaults, then only what is
    given explicitly (preset, file, --set); the base's preset name stays when none is given."""
    saved = tmp_path / "config.toml"
    saved.write_text(to_toml(load_config(None, ["model.context=64", "train.max_steps=12"], "tiny"), with_docs=False))
    cfg = load_config(base=saved)
    assert (cfg.preset, cfg.model.n_layer, cfg.model.context, cfg.train.max_steps) == ("tiny", 2, 64, 12)
    cfg = load_config(None, ["train.max_steps=20"], base=saved)
    assert (cfg.model.context, cfg.train.max_steps) == (64, 20)
    cfg = load_config(None, None, "small", base=saved)  # an explicit preset lays all its values on top
    assert (cfg.preset, cfg.model.n_layer, cfg.model.context, cfg.train.max_steps) == ("small", 6, 256, 5000)
    with pytest.raises(ConfigError, match=r"saved config .*missing\.toml"):
        load_config(base=tmp_path / "missing.toml")


def test_a_relative_path_resolves_against_the_file_that_holds_it(tmp_path: Path, monkeypatch):
    """Every field declared a path: relative to the config file's folder, to a saved config's
    folder, or to the current directory for --set; an absolute path and a checkpoint name stay."""
    import dataclasses

    from londinium.config import SECTIONS

    fields = {f"{name}.{f.name}": f for name, cls in SECTIONS.items() for f in dataclasses.fields(cls) if f.metadata.get("path")}
    paths = list(fields)
    assert {"corpus.sources", "corpus.cache_dir", "eval.probe_file", "export.out", "serve.export", "serve.request_log",
            "eval.checkpoint", "sft.data"} <= set(paths)
    listed = {key for key, f in fields.items() if f.default_factory is not dataclasses.MISSING and isinstance(f.default_factory(), list)}
    value = {key: '["sub/x"]' if key in listed else '"sub/x"' for key in paths}  # a list of files: each item a path
    body = "".join(f'{key} = {value[key]}\n' for key in paths)  # dotted keys: one line a field
    (tmp_path / "project").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "cwd").mkdir()
    (tmp_path / "project" / "londinium.toml").write_text(body)
    (tmp_path / "run" / "config.toml").write_text(body)
    monkeypatch.chdir(tmp_path / "cwd")
    for cfg, folder in ((load_config("../project/londinium.toml"), "project"), (load_config(base="../run/config.toml"), "run"),
                        (load_config(None, [f"{key}={value[key]}" for key in paths]), "cwd")):
        for key in paths:
            section, name = key.split(".")
            want = str(tmp_path / folder / "sub" / "x")
            assert getattr(getattr(cfg, section), name) == ([want] if key in listed else want), (key, folder)
    cfg = load_config(None, [f"corpus.sources='{tmp_path}/a.toml'", "eval.checkpoint=latest", "export.checkpoint=step-7"])
    assert (cfg.corpus.sources, cfg.eval.checkpoint, cfg.export.checkpoint) == (f"{tmp_path}/a.toml", "latest", "step-7")
