"""Which profile a corpus has: chosen by its sources registry, recorded in its data card.

    profile = "period-london"          # top level of a registry: all of a shipped profile

    [profile]                          # or: a base and the parts to change
    base = "neutral"
    folding = "period-london"          # a part may name a profile to take that profile's part ...
    probes = "my_probes.toml"          # ... or be a file relative to the registry ("" switches it off)

    [[source]]
    id = "folio"
    profile = "period-london"          # a source's own profile sets the folding of its documents

A registry that says nothing gets `neutral`; the embedded registry says `period-london`. The corpus
stage records the resolved profile in `corpus/report.json`; every later stage asks `profile_for(ws)`
and so uses the profile the corpus was built with, whatever the registry says now.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from londinium.errors import ConfigError
from londinium.profiles.profile import BUILTIN, PARTS, Profile, apply_parts, builtin
from londinium.workspace import Workspace


def registry_profile(path: str | Path | None = None) -> Profile:
    """The profile a sources registry selects (None or "": the embedded registry)."""
    from londinium.corpus.sources import default_registry_path
    from londinium.files import read_toml

    path = Path(path) if path else default_registry_path()
    data = read_toml(path, "sources registry", ConfigError, "fix corpus.sources or create the file")
    value = data.get("profile", "neutral")
    if isinstance(value, str):
        profile = builtin(value, f"{path}: profile")
    elif isinstance(value, dict):
        table = dict(value)
        base, name = table.pop("base", "neutral"), table.pop("name", "")
        if not isinstance(base, str) or not isinstance(name, str):
            raise ConfigError(f"{path}: [profile] fields 'base' and 'name' must be strings")
        changed = [k for k in PARTS if k in table]
        name = name or (f"{base} + {', '.join(changed)}" if changed else base)  # says what was changed
        profile = dataclasses.replace(apply_parts(builtin(base, f"{path}: [profile] base"), table, path), name=name)
    else:
        raise ConfigError(f"{path}: 'profile' must be a profile name ({', '.join(BUILTIN)}) or a [profile] table")
    folds = {}
    for n, table in enumerate(data.get("source") or [], start=1):
        if isinstance(table, dict) and table.get("profile"):
            folds[str(table.get("id"))] = builtin(table["profile"], f"{path}: source '{table.get('id')}' (#{n}): field 'profile'").folding
    return dataclasses.replace(profile, source_folding=folds) if folds else profile


def profile_for(ws: Workspace) -> Profile:
    """The profile of the workspace's corpus, as the corpus stage recorded it in its data card.

    A corpus adopted from outside (`Workspace.adopt`) is `neutral` unless the adoption's config
    names a profile ({"profile": "period-london"}); a data card written before profiles existed
    means the embedded registry's profile when it was built from that registry, else `neutral`."""
    entry = ws.manifest().get("corpus") or {}
    config = entry.get("config", {})
    if config.get("adopted"):
        return builtin(str(config.get("profile", "neutral")), f"{ws.manifest_file}: corpus")
    card = _card(ws)
    if card is not None and "profile" in card:
        return Profile.from_record(card["profile"], str(ws.corpus_report_json))
    section = config.get("section", {})
    return builtin("period-london" if entry and not section.get("sources") else "neutral")


def _card(ws: Workspace) -> dict[str, Any] | None:
    try:
        card = json.loads(ws.corpus_report_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None
