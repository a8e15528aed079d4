"""The model card and the export's printed commands: the Hub licence taken from the corpus sources, never
invented; load commands that survive the shell; the evaluation named as the report card names it."""

from __future__ import annotations

from londinium.export.card import hub_license


def test_one_known_hub_licence_shared_by_every_source_is_used_as_is() -> None:
    assert hub_license([{"license": "CC-BY-4.0"}, {"license": "cc-by-4.0 "}]) == "cc-by-4.0"


def test_free_text_or_mixed_licences_are_other_and_an_unstated_one_is_unknown() -> None:
    assert hub_license([{"license": "Public domain (Project Gutenberg texts)"}]) == "other"
    assert hub_license([{"license": "mit"}, {"license": "apache-2.0"}]) == "other"
    assert hub_license([]) == "unknown" and hub_license([{"license": "mit"}, {"license": ""}]) == "unknown"


def test_the_printed_load_commands_survive_the_shell_whatever_the_prompt_and_path() -> None:
    """The prompt is the corpus profile's hint (held-out text for your own corpus), so it may hold
    quotes, `$` or a backslash; the shell must hand both tools exactly that prompt and path."""
    import ast
    import shlex
    from pathlib import Path

    from londinium.export.run import load_command

    target, prompt = Path("/tmp/an export's dir"), "It's \"$HOME\" \\ `ls`"
    assert shlex.split(load_command(target, "gguf", prompt)) == ["llama-cli", "-m", str(target), "-p", prompt]
    python, flag, code = shlex.split(load_command(target, "hf", prompt))
    assert (python, flag) == ("python", "-c")
    strings = [n.value for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert str(target) in strings and prompt in strings


def test_the_evaluation_names_the_cloze_set_and_the_probes_by_their_title() -> None:
    from londinium.export.card import _evaluation_lines

    overall = {"n": 40, "accuracy": 0.3, "accuracy_se": 0.05, "chance": 0.25}
    lines = "\n".join(_evaluation_lines({"cloze": {"choices": 4, "summary": {"overall": overall}},
                                         "probes": {"name": "period_london", "title": "Domain probes (period London)",
                                                    "summary": {"overall": {"n": 12, "accuracy": 0.5, "chance": 0.25}}}}))
    assert "30.0% ± 5.0% correct of 40 (chance 25%" in lines
    assert "Domain probes (period London) (period_london): 50% correct of 12" in lines
    neutral = "\n".join(_evaluation_lines({"cloze": {"choices": 4, "summary": {"overall": overall}}}))
    assert "probes" not in neutral.lower()
