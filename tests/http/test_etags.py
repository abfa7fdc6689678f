"""The one ETag format and parser (``spacesvc.http.conditional``): what If-Match accepts, what
If-None-Match lists, and what every ETag header says."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from spacesvc.http.conditional import format_etag, listed_tags, names_version, not_modified, parse_etag

pytestmark = pytest.mark.unit


def test_an_etag_is_the_version_quoted_and_parses_back_to_it() -> None:
    for version in (1, 7, 123_456_789):
        assert format_etag(version) == f'"{version}"'
        assert parse_etag(format_etag(version)) == version


@pytest.mark.parametrize(("value", "version"), [('W/"3"', 3), (' "12" ', 12), ('"007"', 7)])
def test_a_weak_or_padded_etag_names_its_version(value: str, version: int) -> None:
    assert parse_etag(value) == version


@pytest.mark.parametrize("value", ["3", '"3', '"abc"', '""', '"1234567890"', '"3", "4"', "*", 'w/"3"', '"-1"'])
def test_anything_but_one_etag_naming_a_version_is_refused(value: str) -> None:
    assert parse_etag(value) is None


def test_a_list_gives_every_opaque_tag_weak_or_strong() -> None:
    assert listed_tags('W/"3", "4" ,"x"') == ["3", "4", "x"]
    assert listed_tags("*") == [] and listed_tags("") == []


def test_if_none_match_is_matched_weakly_and_star_matches_any_version_but_names_none() -> None:
    listed = make_mocked_request("GET", "/", headers={"If-None-Match": '"2", W/"5"'})
    assert names_version(listed, 5) and not_modified(listed, 5) and not names_version(listed, 3)
    star = make_mocked_request("GET", "/", headers={"If-None-Match": "*"})
    assert not_modified(star, 9) and not names_version(star, 9)
    assert not not_modified(make_mocked_request("GET", "/"), 1)
