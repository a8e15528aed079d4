"""The reports a server shows come from a fixed allow-list: the report's own Markdown, and the PNG
files it links by a bare name beside it, never through a symbolic link."""

from __future__ import annotations

import json

import pytest

from londinium.serve.reports import Provenance, find_report, report_list
from londinium.workspace import Workspace

RUN = "main"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    folder = ws.eval_run_dir(RUN)
    folder.mkdir(parents=True)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not yours")
    (folder / "ok.png").write_bytes(b"\x89PNG plot")
    (folder / "linked.png").symlink_to(outside)
    (folder / "unlinked.png").write_bytes(b"\x89PNG other")
    (folder / "report.md").write_text("# Report\n\n![a plot](ok.png)\n![a link](linked.png)\n![up](../../secret.png)\n"
                                      "![abs](/etc/passwd.png)\n", encoding="utf-8")
    return ws


def test_an_image_is_served_only_if_the_report_links_it_and_it_is_a_file_beside_it(ws) -> None:
    report = find_report(Provenance(ws, RUN), "report-card")
    assert report is not None and report.image("ok.png") == ws.eval_run_dir(RUN) / "ok.png"
    for name in ("linked.png", "unlinked.png", "../../secret.png", "/etc/passwd.png", "report.md", "OK.png", ""):
        assert report.image(name) is None, name


def test_a_report_that_is_a_symbolic_link_is_not_served(ws, tmp_path) -> None:
    elsewhere = tmp_path / "other.md"
    elsewhere.write_text("# someone else's file", encoding="utf-8")
    ws.corpus_dir.mkdir(parents=True)
    ws.corpus_report_md.symlink_to(elsewhere)
    assert find_report(Provenance(ws, RUN), "data-card") is None
    listed = {r["name"]: r for r in report_list(Provenance(ws, RUN))}
    assert listed["data-card"]["available"] is False and listed["report-card"]["available"] is True
    assert find_report(Provenance(ws, RUN), "../corpus/report") is None


def test_an_export_shows_its_own_model_card_and_says_what_it_carries(ws, tmp_path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "README.md").write_text("# main, step 5\n", encoding="utf-8")
    (export / "londinium.json").write_text(json.dumps({"run": RUN, "step": 5, "checkpoint": {"path": "/x/step-000005", "tokens_seen": 2560}}))
    p = Provenance.of_export(ws, export)
    assert (p.run, p.step, p.checkpoint, p.tokens_seen) == (RUN, 5, "step-000005", 2560)
    assert find_report(p, "model-card").text() == "# main, step 5\n"
    assert find_report(p, "report-card") is None  # the workspace's report of a run of that name may be another model's
    assert {r["name"]: r["hint"] for r in report_list(p)}["report-card"] == "an export directory carries its model card only"
    (export / "londinium.json").write_text("[not provenance")
    assert Provenance.of_export(ws, export).step is None
