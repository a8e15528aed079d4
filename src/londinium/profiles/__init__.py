"""Corpus profiles: what belongs to a corpus's domain rather than to every corpus (DESIGN.md, 11).

    from londinium.profiles import profile_for, registry_profile
    profile = profile_for(ws)                 # the profile the workspace's corpus was built with
    profile.fold("vpon")                      # "upon" under period-london, "vpon" under neutral
    profile.fold_for("kjv")                   # a source's own folding (dedup, search index)
    profile.folds                             # whether anything is folded (search wording)
    profile.path("probes")                    # the hand-written probe set, or None
    profile.prompt_hint(ws)                   # "Thou art", or the first words of held-out text
    profile.style                             # "the English of London, 1590-1670", or ""

Parts of a profile: `folding` (spelling folding for near-duplicate grouping and search),
`period_words` and `anachronisms` (word lists: generation metrics, tokenizer report), `probes` and
`probes_title` (a hand-written probe set for `londinium eval`), `example_prompt` (export hints,
model cards), `style` (how prompts and cards name the corpus's language), `tasks` (the tasks cut
from the corpus beside the generic ones, `londinium.tasks.catalog`), `description`.

Two profiles ship in `data_files/profiles/`: `period-london`, which the embedded registry selects,
and `neutral` (every part off), which any other registry gets unless it opts in, wholly or part by
part, per corpus (`profile = ...` or `[profile]`) and, for folding, per source (`profile` in a
`[[source]]`). Modules: `profile` (what a profile holds), `select` (which one a corpus has).
"""

from londinium.profiles.profile import BUILTIN, Profile, builtin
from londinium.profiles.select import profile_for, registry_profile

__all__ = ["BUILTIN", "Profile", "builtin", "profile_for", "registry_profile"]
