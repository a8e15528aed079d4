"""The data-budget check before training: how many times will the plan read the corpus?

Small corpora are where small models overfit. Repeating data is nearly as good as fresh data for
about 4 epochs and worth little beyond ~16 (Muennighoff et al. 2023, "Scaling Data-Constrained
Language Models"); a compute-optimal model sees ~20 tokens per parameter (Hoffmann et al. 2022).
The check prints the numbers and warns, it never refuses: a deliberate many-epoch run is legitimate.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataBudget:
    unique_tokens: int  # tokens in the train shard
    params: int
    planned_tokens: int  # max_steps x tokens per step

    @property
    def epochs(self) -> float:
        return self.planned_tokens / max(1, self.unique_tokens)

    @property
    def unique_tokens_per_param(self) -> float:
        return self.unique_tokens / max(1, self.params)


def _n(x: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


def budget_report(b: DataBudget, warn_epochs: float) -> tuple[str, str | None]:
    """One summary line, and a warning when the plan exceeds `warn_epochs` passes over the data."""
    summary = (f"data budget: {_n(b.unique_tokens)} unique train tokens, {_n(b.params)} parameters "
               f"({b.unique_tokens_per_param:.2f} tokens/parameter; compute-optimal is ~20), "
               f"plan {_n(b.planned_tokens)} tokens = {b.epochs:.1f} epochs")
    warning = None
    if warn_epochs > 0 and b.epochs > warn_epochs:
        warning = (f"warning: the plan reads the train split {b.epochs:.1f} times (more than "
                   f"train.budget_warn_epochs = {warn_epochs:g}); past ~4 epochs repeated tokens add little and "
                   f"the model starts to memorise the corpus -- watch the validation loss, or lower "
                   f"train.max_steps, use a smaller model, or add data")
    return summary, warning
