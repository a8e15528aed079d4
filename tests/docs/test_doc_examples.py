"""Every shell and Python example in README.md and docs/*.md runs here, so the docs cannot rot.

Sybil (a maintained documentation-testing tool) finds the ```bash and ```python blocks of every
Markdown file in README.md and docs/ -- a new guide joins by existing. Each file's examples run in
order, in a fresh copy of a small trained workspace (`londinium-work`, as the docs call it), in its
own working directory.

- A ```python block runs on its own (its imports and variables defined in it), unless its first
  line is `# continues ...`: then it runs in the namespace the file's earlier blocks left.

- A ```bash block is a list of `londinium ...` commands (comments and `\\` continuations allowed);
  each runs through the real CLI in this process (no interpreter start-up) and must exit 0.
- A block the tests cannot run says so on its first line, visibly to the reader too:
  `# not run in the tests: <why>` (multi-node torchrun, GPU-only, a 10-minute run, the network).
  Any other command in a bash block fails the test and says to mark the block. A command that
  does not return (`londinium serve` in the foreground) must be marked too; it fails at the timeout.
- A ```toml block whose first line names a file (`# my-texts.toml: ...`) is written to that file
  in the working directory, so the commands after it use the registry the reader sees.
- A block that imports an optional extra (`llama_cpp`: `pip install -e '.[llama]'`) is skipped,
  saying so, where that extra is not installed.
- `londinium` on PATH is this checkout's CLI (a block may start it as a subprocess: an MCP host
  does), and nothing is fetched from the Hugging Face Hub (`HF_HUB_OFFLINE=1`).
- Small settings come from a `londinium.toml` in the working directory -- the config file every
  command reads -- so `--preset tiny` examples run as written, only with fewer steps, documents and
  tokens (see TINY_CONFIG). Files the examples name as the user's own (prompts.txt, my_sonnets.txt,
  the folder my-texts/) are written there too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from helpers.prose import prose
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"^\s*#\s*not run in the tests:\s*(?P<why>\S.*)$", re.IGNORECASE)
FILE_NAMED = re.compile(r"^#\s*(?P<name>[\w.-]+\.toml)\b")  # the first line of a ```toml block that is a file
CONTINUES = re.compile(r"^\s*#\s*continues\b", re.IGNORECASE)
OPTIONAL_EXTRAS = {"llama_cpp": "llama"}  # module -> the pyproject extra that installs it
os.environ["HF_HUB_OFFLINE"] = "1"  # set before transformers is imported: exports load from their directory only

# Applied under every command's flags and --set (defaults < preset < this file < --set): the tiny
# preset's model with few steps, few documents, short generations, and no reference downloads.
TINY_CONFIG = """\
[tokenizer]
compare_gpt2 = false
compare_sources = false

[train]
max_steps = 4
batch_size = 4
eval_every = 4
eval_batches = 1
log_every = 1
threads = 1
budget_warn_epochs = 1000.0

[sft]
max_steps = 4
eval_every = 4
warmup_steps = 1

[rl]
max_steps = 2
eval_every = 2
group_size = 2
prompts_per_step = 2
max_new_tokens = 6
eval_prompts = 2
pass_k = 2

[eval]
max_docs = 4
prompts = 1
temperatures = [0.0]
max_new_tokens = 8

[generate]
max_tokens = 16

[tasks]
train_items = 20
eval_items = 4
max_tokens = 8
"""
USER_FILES = {
    "prompts.txt": "Thou art\nTo be, or\n",
    "my_sonnets.txt": "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate.\n",
    # the README's folder of one's own texts: six short books, one a file
    **{f"my-texts/{name}.txt": prose(40 + i) for i, name in enumerate(("letters", "diary", "notes/spring", "notes/summer",
                                                                          "sermons", "travels"))},
}


def _run_shell(example) -> None:
    """Each `londinium ...` command of a bash block through the real CLI; all must exit 0."""
    from londinium.cli import main

    source = re.sub(r"\\\n\s*", " ", example.parsed)  # join continuation lines
    for line in source.splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] != "londinium":
            raise AssertionError(f"{example.path}, line {example.line}: `{line.strip()}` is not a londinium command the "
                                 "tests can run; make the block's first line `# not run in the tests: <why>`")
        out, err = io.StringIO(), io.StringIO()
        stdin, sys.stdin = sys.stdin, io.StringIO("")  # `chat` reads until end of input
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(argv[1:])
        finally:
            sys.stdin = stdin
        assert rc == 0, f"{example.path}, line {example.line}: `{line.strip()}` exited {rc}:\n{err.getvalue()[-2000:]}"


def _write_file(example) -> None:
    """A ```toml block whose first line names a file: write it there, for the commands after it."""
    if m := FILE_NAMED.match(str(example.parsed)):
        assert m["name"] != "londinium.toml", f"{example.path}, line {example.line}: a londinium.toml block would replace the tests' small settings"
        Path(m["name"]).write_text(str(example.parsed), encoding="utf-8")


SYBIL = Sybil(parsers=[PythonCodeBlockParser(), CodeBlockParser("bash", _run_shell), CodeBlockParser("toml", _write_file)])
EXAMPLES = [(doc, i) for doc in DOCS for i, _ in enumerate(SYBIL.parse(doc))]
_documents: dict[Path, tuple[Path, list]] = {}


@pytest.fixture(scope="session")
def docs_template(tiny_workspace, tmp_path_factory) -> Path:
    """A working directory with `londinium-work` (corpus, tokenizer, shards, and runs 'main' and
    'wide' trained as training.md trains them, under TINY_CONFIG), the config and the user's files."""
    from londinium.cli import main

    root = tmp_path_factory.mktemp("docs-template")
    shutil.copytree(tiny_workspace.root, root / "londinium-work")
    (root / "londinium.toml").write_text(TINY_CONFIG)
    for name, text in USER_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    # The two runs the guides refer to: 'main' and training.md's second run 'wide'; and the search
    # index, which quickstart builds (the MCP server's search tools read it).
    with contextlib.chdir(root), contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--preset", "tiny"]) == 0
        assert main(["train", "--preset", "tiny", "--run", "wide", "--set", "model.n_embd=384"]) == 0
        assert main(["index", "build"]) == 0
    # `londinium` as installed, but this checkout's code even where a host clears the environment
    # (the MCP SDK's stdio client passes on only PATH, HOME and a few more).
    (root / "bin").mkdir()
    shim = root / "bin" / "londinium"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(ROOT / "src"))} exec {shlex.quote(sys.executable)} -m londinium "$@"\n')
    shim.chmod(0o755)
    return root


@pytest.fixture
def doc_dir(request, docs_template, tmp_path_factory, monkeypatch):
    doc = request.node.callspec.params["doc"]
    if doc not in _documents:  # the first example of a file: its own copy of the template
        where = tmp_path_factory.mktemp(doc.stem)
        shutil.copytree(docs_template, where, dirs_exist_ok=True)
        _documents[doc] = (where, list(SYBIL.parse(doc)))
    where, examples = _documents[doc]
    monkeypatch.chdir(where)
    monkeypatch.setenv("PATH", f"{where / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return examples


@pytest.mark.slow  # ~40 s in all on 2 busy cores: the template's training runs, `eval`, the MCP example's server start
@pytest.mark.timeout(120)  # a command that never returns (a server started in an example) fails here, not in 5 min
@pytest.mark.parametrize(("doc", "index"), EXAMPLES, ids=[f"{d.relative_to(ROOT)}-{i}" for d, i in EXAMPLES])
def test_doc_example(doc, index, doc_dir):
    example = doc_dir[index]
    first = next((line for line in str(example.parsed).splitlines() if line.strip()), "")
    marked = NOT_RUN.match(first)
    if marked:
        pytest.skip(f"{doc.relative_to(ROOT)}, line {example.line}: not run in the tests: {marked['why']}")
    for module, extra in OPTIONAL_EXTRAS.items():
        if re.search(rf"^\s*(from|import)\s+{module}\b", str(example.parsed), re.MULTILINE) and not importlib.util.find_spec(module):
            pytest.skip(f"{doc.relative_to(ROOT)}, line {example.line}: needs {module}, the `{extra}` extra (pip install -e '.[{extra}]')")
    if example.region.evaluator not in (_run_shell, _write_file) and not CONTINUES.match(first):
        example.document.namespace.clear()  # a self-contained block must not lean on an earlier one
    example.evaluate()


def test_every_doc_is_collected():
    """The harness sees the README and every guide, and finds examples in them (a broken parser
    that finds nothing would otherwise pass)."""
    assert ROOT / "README.md" in DOCS and len(DOCS) >= 8
    assert len(EXAMPLES) >= 12
