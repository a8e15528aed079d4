"""The closing summary of quickstart: what the figures mean, said where they are printed."""

from __future__ import annotations

from londinium.pipeline import assistant_lines, summary_lines


def test_probe_line_says_what_probes_measure_and_what_passing_takes():
    results = {"probes": {"summary": {"overall": {"n": 71, "accuracy": 0.27, "chance": 0.26, "mean_rank": 2.4}}}}
    text = summary_lines(results)
    assert "probes: 27% correct of 71 (chance 26%)" in text
    explanation = text.splitlines()[1]
    assert "distractors" in explanation and "chance" in explanation and "more training" in explanation


def test_no_probe_explanation_without_probes():
    assert "distractors" not in summary_lines({"probes": {"summary": {"overall": {"n": 0}}}})


def test_cloze_line_gives_the_standard_error_and_says_what_an_item_is():
    overall = {"n": 1000, "accuracy": 0.413, "accuracy_se": 0.016, "chance": 0.25, "margin": -0.52, "margin_se": 0.05}
    text = summary_lines({"cloze": {"summary": {"overall": overall}}})
    assert "cloze: 41.3% ± 1.6% correct of 1000 (chance 25%), margin -0.52 ± 0.05 nats" in text
    assert "which of a few words of the corpus comes next in a held-out passage" in text.splitlines()[1]


def test_assistant_lines_give_test_scores_against_baselines_format_and_forgetting():
    def block(metric, baseline, score, base, fmt, n):
        return {"metric": metric, "baseline": baseline,
                "splits": {"val": {"summary": {"n": 5, "score": 0.0, "baseline": 0.0, "format": 0.0}},
                           "test": {"summary": {"n": n, "score": score, "baseline": base, "format": fmt}}}}

    answers = {"perplexity": {"val": {"total": {"bits_per_byte": 1.851}}},
               "tasks": {"tasks": {"source": block("choice", "majority", 0.72, 0.45, 1.0, 100),
                                   "modernize": block("chrf", "copy", 0.121, 0.75, 0.9, 100),
                                   "empty": {"metric": "exact", "baseline": "majority", "splits": {}}}}}
    text = assistant_lines(answers, {"perplexity": {"val": {"total": {"bits_per_byte": 1.829}}}})
    assert "val: 1.851 bits per byte on plain text (+0.022 against the base model)" in text
    assert "source 72 (majority 45); modernize 12 chrF (copy 75)" in text  # test split only; a task with no items left out
    assert "answers in the trained format (ending its turn): 95.0% of 200" in text  # weighted by items, test split
    assert assistant_lines({}, {}) == ""
