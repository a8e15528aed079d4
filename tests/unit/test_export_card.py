"""The model card's Hub licence: taken from the corpus sources, never invented."""

from __future__ import annotations

from londinium.export.card import hub_license


def test_one_known_hub_licence_shared_by_every_source_is_used_as_is() -> None:
    assert hub_license([{"license": "CC-BY-4.0"}, {"license": "cc-by-4.0 "}]) == "cc-by-4.0"


def test_free_text_or_mixed_licences_are_other_and_an_unstated_one_is_unknown() -> None:
    assert hub_license([{"license": "Public domain (Project Gutenberg texts)"}]) == "other"
    assert hub_license([{"license": "mit"}, {"license": "apache-2.0"}]) == "other"
    assert hub_license([]) == "unknown" and hub_license([{"license": "mit"}, {"license": ""}]) == "unknown"
