"""The corpus search index: BM25 over words folded as the corpus profile says, filters, snippets, the stage's skipping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from londinium.config import Config
from londinium.files import write_jsonl
from londinium.index.build import build_index
from londinium.index.search import CorpusIndex, SearchError, snippet_span
from londinium.spelling import fold_word
from londinium.workspace import Workspace

from tests.integration.train_helpers import cli_in_process

MODERN = ("BANQUO. How far is't call'd to Forres? What are these, so wither'd and so wild in their attire, "
          "that look not like the inhabitants o' the earth, and yet are on't? Live you? or are you aught "
          "that man may question? MACBETH. Speak, if you can: what are you? And I have joy upon this blasted heath.")
FOLIO = ("Banquo. How farre is't call'd to Soris? What are these, so wither'd, and so wilde in their attyre, "
         "that looke not like th' Inhabitants o'th' Earth, and yet are on't? Liue you, or are you aught "
         "that man may question? Macb. Speake if you can: what are you? And I haue ioy vpon this blasted Heath.")
OTHER = [
    ("kjv/gen#0", "kjv", "Genesis 1", [1611, 1611],
     "In the beginning God created the heaven and the earth. And the earth was without form, and void; "
     "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters."),
    ("milton/pl#3", "milton", "PARADISE LOST", [1667, 1667],
     "Of Mans First Disobedience, and the Fruit of that Forbidden Tree, whose mortal tast brought Death "
     "into the World, and all our woe, with loss of Eden, till one greater Man restore us."),
    ("kjv/ps#23", "kjv", "Psalms 23", [1611, 1611],
     "The LORD is my shepherd; I shall not want. He maketh me to lie down in green pastures: he leadeth "
     "me beside the still waters. He restoreth my soul."),
]


PERIOD = {"profile": "period-london"}  # the adopted corpus has the default corpus's profile: its spellings fold


def row(doc_id: str, source: str, title: str, period: list[int], text: str) -> dict:
    return {"id": doc_id, "text": text, "source": source, "period": period, "group": doc_id, "title": title}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("search") / "ws")
    write_jsonl(ws.corpus_split("train"), [row("shakespeare/macbeth#1", "shakespeare", "MACBETH", [1590, 1623], MODERN),
                                           *(row(*o) for o in OTHER[:2])])
    write_jsonl(ws.corpus_split("val"), [row("shakespeare/macbeth_f#1", "shakespeare", "The Tragedie of Macbeth", [1590, 1623], FOLIO)])
    write_jsonl(ws.corpus_split("test"), [row(*OTHER[2])])
    ws.adopt("corpus", [ws.corpus_split(s) for s in ("train", "val", "test")], PERIOD)
    build_index(ws, Config(), log=lambda m: None, show_progress=False)
    return ws


@pytest.fixture(scope="module")
def index(ws) -> CorpusIndex:
    return CorpusIndex.load(ws, snippet_chars=80)


def ids(hits) -> list[str]:
    return [h.id for h in hits]


def test_fold_word_meets_period_spellings():
    for old, new in [("vpon", "upon"), ("haue", "have"), ("ioy", "joy"), ("ſweet", "sweet"), ("Speake", "speak"), ("looke", "look")]:
        assert fold_word(old) == fold_word(new), (old, new)
    assert fold_word("thou") != fold_word("thee")


def test_a_sentence_copied_from_a_document_finds_it_first(index):
    assert ids(index.search("He maketh me to lie down in green pastures"))[0] == "kjv/ps#23"
    assert ids(index.search("whose mortal tast brought Death into the World"))[0] == "milton/pl#3"


def test_a_folio_spelling_query_finds_the_modern_twin_and_back(index):
    folio_query = ids(index.search("haue ioy vpon this blasted heath", k=5))
    modern_query = ids(index.search("have joy upon this blasted heath", k=5))
    assert set(folio_query[:2]) == set(modern_query[:2]) == {"shakespeare/macbeth#1", "shakespeare/macbeth_f#1"}
    # a word only the Folio spells one way: the modern spelling finds it
    assert ids(index.search("attire wild", split="val")) == ["shakespeare/macbeth_f#1"]
    assert ids(index.search("attyre wilde", split="train"))[0] == "shakespeare/macbeth#1"


def test_filters_restrict_the_hits(index):
    assert {h.source for h in index.search("the earth", k=10, source="kjv")} == {"kjv"}
    assert ids(index.search("waters", split="test")) == ["kjv/ps#23"]
    in_1660s = index.search("death man earth", k=10, period_from=1650, period_to=1700)
    assert ids(in_1660s) == ["milton/pl#3"]
    assert "milton/pl#3" not in ids(index.search("death man earth", k=10, period_to=1640))
    with pytest.raises(SearchError, match="sources: kjv, milton, shakespeare"):
        index.search("earth", source="homer")
    with pytest.raises(SearchError, match="no words"):
        index.search("1611 ...")


def test_filters_that_leave_nothing_say_which_filter_excluded_what(index):
    with pytest.raises(SearchError, match=r"period 1800-1900 keeps 0 \(the documents' periods span 1590-1667\)"):
        index.search("earth", period_from=1800, period_to=1900)
    with pytest.raises(SearchError, match=r"source 'milton' keeps 1; split 'val' keeps 1"):
        index.search("earth", source="milton", split="val")


def test_hits_carry_provenance_and_a_snippet_at_the_match(index):
    [hit] = index.search("restoreth my soul", k=1)
    doc = index.get(hit.id)
    assert (hit.source, hit.title, hit.period, hit.split) == ("kjv", "Psalms 23", [1611, 1611], "test")
    assert "Authorized Version" in hit.license  # from the sources registry
    assert doc.text[hit.snippet_start:hit.snippet_end] == hit.snippet
    assert "restoreth my soul" in hit.snippet and len(hit.snippet) <= 80
    words = sorted(doc.text[s:e].lower() for s, e in hit.matches)
    assert words == ["my", "restoreth", "soul"]
    assert hit.score > 0


def test_snippet_span_picks_the_densest_passage():
    text = "Vpon " + "x " * 100 + "blasted heath's heath upon " + "y " * 100
    start, end, matches = snippet_span(text, ["upon", "vpon", "blasted", "heath"], 40, fold_word)
    assert "blasted heath's heath upon" in text[start:end]
    assert [text[s:e] for s, e in matches] == ["blasted", "heath", "upon"]  # "heath's" is another word
    assert all(start <= s < e <= end for s, e in matches)
    start, end, matches = snippet_span(text, ["nowhere"], 40, fold_word)
    assert (start, matches) == (0, []) and text[start:end].startswith("Vpon")


def test_unknown_document_is_a_clear_error(index):
    with pytest.raises(SearchError, match="no document with id 'nope'"):
        index.get("nope")


# ---- folding follows the corpus profile -------------------------------------------------------------

TECH = [("tech/byte#0", "Every byte of the header is read before the body of the message."),
        ("tech/pip#0", "Install the package with pip from the local index."),
        ("tech/file#0", "Open the file for writing and close it when you are done."),
        ("tech/bit#0", "Set the bit that marks the page as dirty.")]


def _neutral_ws(root) -> Workspace:
    ws = Workspace(root)
    write_jsonl(ws.corpus_split("train"), [row(i, "tech", "Notes", [0, 0], t) for i, t in TECH[:2]])
    write_jsonl(ws.corpus_split("val"), [row(TECH[2][0], "tech", "Notes", [0, 0], TECH[2][1])])
    write_jsonl(ws.corpus_split("test"), [row(TECH[3][0], "tech", "Notes", [0, 0], TECH[3][1])])
    ws.adopt("corpus", [ws.corpus_split(s) for s in ("train", "val", "test")])  # adopted: the neutral profile
    return ws


def test_a_neutral_corpus_folds_case_only(tmp_path):
    """#22: on a corpus that did not ask for early-modern folding, "bit" does not find "byte", "pipe"
    not "pip", "fill" not "file"; index.folding = "early-modern" would have matched them all."""
    ws = _neutral_ws(tmp_path / "ws")
    build_index(ws, Config(), log=lambda m: None, show_progress=False)
    assert json.loads(ws.index_meta.read_text(encoding="utf-8"))["folding"] == {"tech": "none"}
    index = CorpusIndex.load(ws)
    assert ids(index.search("bit")) == ["tech/bit#0"]
    assert index.search("pipe") == [] and index.search("fill") == []
    assert ids(index.search("BYTE")) == ["tech/byte#0"]  # case still folds
    cfg = Config()
    cfg.index.folding = "early-modern"
    logged: list[str] = []
    build_index(ws, cfg, log=logged.append, show_progress=False)
    assert not any("up to date" in line for line in logged)  # the setting is the stage's input
    folded = CorpusIndex.load(ws)
    assert set(ids(folded.search("bit"))) == {"tech/bit#0", "tech/byte#0"}
    assert ids(folded.search("pipe")) == ["tech/pip#0"] and ids(folded.search("fill")) == ["tech/file#0"]


def test_index_folding_none_turns_the_default_corpus_folding_off(ws, tmp_path):
    import shutil

    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    assert set(ids(CorpusIndex.load(copy).search("ioy"))) == {"shakespeare/macbeth#1", "shakespeare/macbeth_f#1"}  # the profile folds
    cfg = Config()
    cfg.index.folding = "none"
    build_index(copy, cfg, log=lambda m: None, show_progress=False)
    assert ids(CorpusIndex.load(copy).search("ioy")) == ["shakespeare/macbeth_f#1"]  # only the Folio spells it so


def test_a_source_with_its_own_folding_is_folded_so_and_queries_meet_both(tmp_path):
    """A registry that folds one source early-modern and leaves the other alone: the index records
    each, a query is folded both ways (OR), and a hit's matches are found in its own folding."""
    from londinium.corpus.build import build_corpus

    notes = ("My own notes, written upon reading the heath scene again: I have my doubts about the witches, and "
             "I have marked where the speech turns from the battle to the prophecy, which is the part I want to study.")
    root = tmp_path / "texts"
    for folder, text in {"folio": FOLIO, "notes": notes}.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "a.txt").write_text(text + "\n", encoding="utf-8")
    registry = root / "sources.toml"
    registry.write_text('[[source]]\nid = "folio"\nkind = "local"\nlocation = "folio"\nprofile = "period-london"\n\n'
                        '[[source]]\nid = "notes"\nkind = "local"\nlocation = "notes"\n', encoding="utf-8")
    cfg = Config()
    cfg.corpus.sources, cfg.corpus.val_fraction, cfg.corpus.test_fraction = str(registry), 0.0, 0.0
    ws = Workspace(tmp_path / "ws")
    build_corpus(ws, cfg.corpus)
    cfg.index.splits = ["train"]
    build_index(ws, cfg, log=lambda m: None, show_progress=False)
    assert json.loads(ws.index_meta.read_text(encoding="utf-8"))["folding"] == {"folio": "early-modern", "notes": "none"}
    index = CorpusIndex.load(ws)
    assert {h.source for h in index.search("upon", k=5)} == {"folio", "notes"}  # "vpon" in the Folio, "upon" in the notes
    assert {h.source for h in index.search("vpon", k=5)} == {"folio", "notes"}  # the query folded early-modern meets "upon"
    assert [h.source for h in index.search("haue", k=5)] == ["folio"]  # the notes' "have" is not folded to meet it
    [folio] = index.search("haue ioy", k=5)
    assert sorted(folio.snippet[s - folio.snippet_start:e - folio.snippet_start].lower() for s, e in folio.matches) == ["haue", "ioy"]


def test_the_stage_is_skipped_when_up_to_date_and_refuses_a_stale_index(ws, tmp_path):
    import shutil

    logged = []
    build_index(ws, Config(), log=logged.append, show_progress=False)
    assert "up to date" in logged[0]
    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    with open(copy.corpus_split("test"), "a", encoding="utf-8") as f:
        f.write(json.dumps(row("kjv/john#1", "kjv", "John 1", [1611, 1611], "In the beginning was the Word.")) + "\n")
    with pytest.raises(SearchError, match="index build"):
        CorpusIndex.load(copy)
    copy.adopt("corpus", [copy.corpus_split(s) for s in ("train", "val", "test")], PERIOD)  # the edited corpus, recorded anew
    build_index(copy, Config(), log=lambda m: None, show_progress=False)
    assert ids(CorpusIndex.load(copy).search("beginning was the Word"))[0] == "kjv/john#1"


def test_missing_index_names_the_command(tmp_path):
    with pytest.raises(SearchError, match="londinium index build"):
        CorpusIndex.load(Workspace(tmp_path / "empty"))


def test_search_cli_json_and_text(ws):
    rc, out, _ = cli_in_process(["search", "green pastures", "-w", str(ws.root), "--format", "json", "--k", "2"])
    assert rc == 0
    data = json.loads(out)
    assert data["hits"][0]["id"] == "kjv/ps#23" and data["hits"][0]["split"] == "test"
    rc, out, _ = cli_in_process(["search", "green pastures", "-w", str(ws.root)])
    assert rc == 0 and out.startswith("1. [") and "Psalms 23" in out
    rc, _, err = cli_in_process(["search", "green", "-w", str(ws.root), "--source", "homer"])
    assert rc == 2 and "no such source" in err


# ---- a damaged index ---------------------------------------------------------------------------------


def _rewrite(path, transform):
    path.write_bytes(transform(path.read_bytes()))
    return path


def _resave(path, transform):
    np.save(path, transform(np.load(path)), allow_pickle=True)
    return path


def _edit_json(path, edit):
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# name -> a function that damages a copy of the index and returns what the error must name
DAMAGE = {
    "truncated scores": lambda ws: _rewrite(ws.index_bm25_dir / "data.csc.index.npy", lambda b: b[:100]),
    "garbage offsets": lambda ws: _rewrite(ws.index_bm25_dir / "indptr.csc.index.npy", lambda b: bytes(range(256)) * 3),
    "params not JSON": lambda ws: _rewrite(ws.index_bm25_dir / "params.index.json", lambda b: b"{k1: "),
    "vocabulary a list": lambda ws: _rewrite(ws.index_bm25_dir / "vocab.index.json", lambda b: b"[1, 2]"),
    "pickled array": lambda ws: _resave(ws.index_bm25_dir / "indices.csc.index.npy", lambda a: np.array([{"x": 1}], dtype=object)),
    "documents: a line not JSON": lambda ws: _rewrite(ws.index_documents, lambda b: b"not json\n" + b),
    "documents: a row without its id": lambda ws: _rewrite(ws.index_documents, lambda b: b'{"split": "train"}\n' + b.split(b"\n", 1)[1]),
    "documents: a period as text": lambda ws: _rewrite(ws.index_documents, lambda b: b.replace(b'"period": [1590, 1623]', b'"period": "1590"', 1)),
    "meta: splits a list": lambda ws: _edit_json(ws.index_meta, lambda m: m.update(splits=["train"])),
    "meta: documents as text": lambda ws: _edit_json(ws.index_meta, lambda m: m.update(documents="5")),
    "spellings a list": lambda ws: _rewrite(ws.index_spellings, lambda b: b"[]"),
    "spellings of another folding": lambda ws: _edit_json(ws.index_spellings, lambda f: f.update(none=f.pop("early-modern"))),
    "meta: an unknown folding": lambda ws: _edit_json(ws.index_meta, lambda m: m["folding"].update(kjv="latin")),
    "meta: a source without folding": lambda ws: _edit_json(ws.index_meta, lambda m: m["folding"].pop("milton")),
    # valid files with the wrong content: only the checks of the arrays against each other catch them
    "document numbers out of range": lambda ws: _resave(ws.index_bm25_dir / "indices.csc.index.npy", lambda a: a + 10**6),
    "offsets out of order": lambda ws: _resave(ws.index_bm25_dir / "indptr.csc.index.npy", lambda a: a[::-1].copy()),
    "a score NaN": lambda ws: _resave(ws.index_bm25_dir / "data.csc.index.npy", lambda a: np.where(np.arange(len(a)) == 0, np.nan, a).astype(a.dtype)),
    "another document count": lambda ws: _edit_json(ws.index_bm25_dir / "params.index.json", lambda p: p.update(num_docs=99)),
    "a term id past the arrays": lambda ws: _edit_json(ws.index_bm25_dir / "vocab.index.json", lambda v: v.update(heath=10**6)),
    "a dtype that is no type": lambda ws: _edit_json(ws.index_bm25_dir / "params.index.json", lambda p: p.update(dtype="bogus")),
}


@pytest.mark.parametrize("recorded", [False, True], ids=["as-left", "manifest-updated"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_index_is_one_line_naming_the_file_and_the_command(ws, tmp_path, damage, recorded):
    """`londinium search` on each kind of damage: exit 2 and one line naming the file and the rebuild
    command, both when the manifest shows the change and when it was re-recorded to match (an index
    adopted from elsewhere), which only the index's own checks catch."""
    import shutil

    from londinium.index.search import index_files

    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    named = DAMAGE[damage](copy)
    if recorded:
        copy.adopt("index", index_files(copy))
    rc, out, err = cli_in_process(["search", "heath", "-w", str(copy.root)])
    assert rc == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(named) in err and "londinium index build" in err, err
    if recorded:
        assert "--force" in err
    rc, _, err = cli_in_process(["index", "build", "-w", str(copy.root), *(["--force"] if recorded else [])])  # as the line says
    assert rc == 0, err
    assert cli_in_process(["search", "heath", "-w", str(copy.root)])[0] == 0


def test_a_missing_index_file_and_an_index_of_another_corpus_name_the_file(ws, tmp_path):
    import shutil

    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    (copy.index_bm25_dir / "vocab.index.json").unlink()
    rc, _, err = cli_in_process(["search", "heath", "-w", str(copy.root)])
    assert rc == 2 and "vocab.index.json is missing" in err and "londinium index build" in err, err
    shutil.rmtree(copy.root)
    shutil.copytree(ws.root, copy.root)
    write_jsonl(copy.corpus_split("test"), [row("kjv/john#1", "kjv", "John 1", [1611, 1611], "In the beginning was the Word.")])
    copy.adopt("corpus", [copy.corpus_split(s) for s in ("train", "val", "test")], PERIOD)
    rc, _, err = cli_in_process(["search", "heath", "-w", str(copy.root)])
    assert rc == 2 and f"built from another {copy.corpus_split('test')}" in err and "londinium index build" in err, err
