"""What a profile holds, and how its parts are read from a profile file or a registry's `[profile]`.

A profile is a small record of strings, so it can be written into the data card and read back by
any later stage exactly as the corpus was built with it. Paths are stored either as
`londinium:<file under data_files/>` (shipped with the package, so a moved installation still finds
them) or as absolute paths (a user's own files).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from londinium.errors import ConfigError
from londinium.spelling import fold_word

BUILTIN = ("neutral", "period-london")
FOLDINGS: dict[str, Callable[[str], str]] = {"none": str.lower, "early-modern": fold_word}
PATH_PARTS = ("period_words", "anachronisms", "probes")
TEXT_PARTS = ("description", "probes_title", "example_prompt", "style", "tasks")
PARTS = ("folding", *PATH_PARTS, *TEXT_PARTS)
SHIPPED = "londinium:"


def data_files() -> Path:
    return Path(str(resources.files("londinium") / "data_files"))


@dataclass(frozen=True)
class Profile:
    """The domain-specific parts of londinium's behaviour for one corpus (see the package docstring)."""

    name: str
    description: str = ""
    folding: str = "none"  # "none" | "early-modern": how words are keyed for matching (dedup, search)
    source_folding: Mapping[str, str] = field(default_factory=dict)  # source id -> folding, for sources with their own profile
    period_words: str = ""  # word list of period vocabulary ("" none)
    anachronisms: str = ""  # word list of words the period cannot have ("" none)
    probes: str = ""  # hand-written probe set ("" none)
    probes_title: str = ""  # how the report card names that probe set
    example_prompt: str = ""  # what hints and cards start a generation with ("" take it from held-out text)
    style: str = ""  # how prompts and cards name the corpus's language ("" nothing specific)
    tasks: str = ""  # the profile's own tasks beside the generic ones, comma-separated names (londinium.tasks.catalog)

    # ---- folding --------------------------------------------------------------------------------
    def fold(self, word: str) -> str:
        """The matching key of `word` under the corpus's folding (lower case when there is none)."""
        return FOLDINGS[self.folding](word)

    def fold_for(self, source: str) -> Callable[[str], str]:
        """The folding function of one source's documents: its own profile's, else the corpus's."""
        return FOLDINGS[self.source_folding.get(source, self.folding)]

    @property
    def folds(self) -> bool:
        """Whether any document is folded (so a search may match other spellings)."""
        return any(f != "none" for f in (self.folding, *self.source_folding.values()))

    # ---- files ----------------------------------------------------------------------------------
    def path(self, part: str) -> Path | None:
        """The file of a path part ("period_words", "anachronisms", "probes"), or None when it has none."""
        if part not in PATH_PARTS:
            raise KeyError(part)
        value = getattr(self, part)
        if not value:
            return None
        return data_files() / value[len(SHIPPED):] if value.startswith(SHIPPED) else Path(value)

    # ---- prompts --------------------------------------------------------------------------------
    def prompt_hint(self, held_out: Any = None) -> str:
        """What an example generation starts with: the profile's own prompt, or else the first words
        of a held-out document (`held_out`: a Workspace, or an iterable of corpus rows), so a hint
        for the Python docs is not 'Thou art'. "The" when there is neither."""
        if self.example_prompt:
            return self.example_prompt
        for doc in _held_out_docs(held_out):
            words = doc.get("text", "").split()[:3]
            if words:
                return " ".join(words)
        return "The"

    # ---- record ---------------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict (the data card's "profile")."""
        return {**dataclasses.asdict(self), "source_folding": dict(sorted(self.source_folding.items()))}

    @classmethod
    def from_record(cls, record: Any, where: str) -> Profile:
        """The profile a data card recorded; `where` names the file in errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(record, dict) or not isinstance(record.get("name"), str):
            raise ConfigError(f"{where}: 'profile' is not a profile record; rebuild the corpus (`londinium corpus build --force`)")
        unknown = sorted(set(record) - known)
        bad = [k for k in known - {"source_folding"} if k in record and not isinstance(record[k], str)]
        folds = record.get("source_folding", {})
        if unknown or bad or not isinstance(folds, dict) or any(f not in FOLDINGS for f in (record.get("folding", "none"), *folds.values())):
            raise ConfigError(f"{where}: the recorded profile has unknown or malformed fields "
                              f"({', '.join(unknown + bad) or 'folding'}); rebuild the corpus (`londinium corpus build --force`)")
        if "tasks" not in record and record["name"] in BUILTIN:  # recorded before profiles had tasks
            record = {**record, "tasks": builtin(record["name"]).tasks}
        return cls(**{**record, "source_folding": dict(folds)})


def _held_out_docs(held_out: Any) -> Any:
    from londinium.workspace import Workspace

    if held_out is None:
        return []
    if isinstance(held_out, Workspace):
        from londinium.data.documents import iter_documents
        from londinium.eval.heldout import prompt_documents

        for split in ("val", "test"):
            if held_out.corpus_split(split).is_file():
                docs = prompt_documents(iter_documents(held_out.corpus_split(split)))
                if docs:
                    return docs
        return []
    return held_out


# ---- reading parts ---------------------------------------------------------------------------------


def builtin(name: str, where: str = "") -> Profile:
    """A profile shipped with londinium (`data_files/profiles/<name>.toml`)."""
    if name not in BUILTIN:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}unknown profile {name!r}; known profiles: {', '.join(BUILTIN)}")
    from londinium.files import read_toml

    path = data_files() / "profiles" / f"{name}.toml"
    table = read_toml(path, "profile", ConfigError)
    return apply_parts(Profile(name), table, path, builtin_ok=False)


def apply_parts(base: Profile, table: Mapping[str, Any], path: Path, builtin_ok: bool = True) -> Profile:
    """`base` with the parts set in `table` (a profile file, or a registry's `[profile]` table at
    `path`). A part's value may name a shipped profile ("period-london") to take that profile's
    part; a path part is otherwise a file relative to `path` ("" switches the part off)."""
    changes: dict[str, str] = {}
    for key, value in table.items():
        where = f"{path}: [profile] field '{key}'"
        if key not in PARTS:
            raise ConfigError(f"{where}: unknown field; known fields: base, name, {', '.join(PARTS)}")
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, got {value!r}")
        if builtin_ok and value in BUILTIN and key != "description":
            other = builtin(value)
            changes[key] = getattr(other, key)
            if key == "probes":  # the probe set comes with the name the report card gives it
                changes.setdefault("probes_title", other.probes_title)
            continue
        if key == "folding" and value not in FOLDINGS:
            raise ConfigError(f"{where}: {value!r} must be one of {', '.join(map(repr, FOLDINGS))} or a profile ({', '.join(BUILTIN)})")
        if key in PATH_PARTS and value:
            file = (path.parent / Path(value).expanduser()).resolve()
            if not file.is_file():
                raise ConfigError(f"{where}: {file} is not a file; give a path relative to {path.parent}, a profile name, or \"\" for none")
            shipped = data_files().resolve()
            value = SHIPPED + file.relative_to(shipped).as_posix() if file.is_relative_to(shipped) else str(file)
        changes[key] = value
    return dataclasses.replace(base, **changes)
