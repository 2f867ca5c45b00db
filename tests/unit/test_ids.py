"""Complaint ids are deterministic and unique per source position; tracking codes are typable."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normalizer.ids import CROCKFORD, complaint_id, parse_tracking_code, tracking_code
from normalizer.schema import Complaint

FAST = settings(database=None, max_examples=200, deadline=None)

# The pattern the published schema enforces on Complaint.tracking_code.
SCHEMA_CODE_RE = re.compile(Complaint.model_fields["tracking_code"].metadata[0].pattern)


def test_complaint_id_is_deterministic_32_lower_hex() -> None:
    first = complaint_id("whatsapp", "+6281100000000", "wamid.ABC")
    assert first == complaint_id("whatsapp", "+6281100000000", "wamid.ABC")
    assert re.fullmatch(r"[0-9a-f]{32}", first)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("webform", "web", "1"), ("webform", "web", "2")),
        (("webform", "web", "1"), ("webform", "web2", "1")),
        (("webform", "web", "1"), ("api", "web", "1")),
        # Field boundaries must not be shiftable.
        (("ab", "c", "d"), ("a", "bc", "d")),
        (("a", "bc", "d"), ("a", "b", "cd")),
        # Separator injection: a native id or account containing the separator byte.
        (("a", "b\x1fc", "d"), ("a", "b", "c\x1fd")),
        (("a\x1fb", "c", "d"), ("a", "b\x1fc", "d")),
        (("a", "b", "c\x1fd"), ("a", "b\x1fc", "d")),
    ],
)
def test_complaint_id_is_distinct_per_source_position(
    left: tuple[str, str, str], right: tuple[str, str, str]
) -> None:
    assert left != right
    assert complaint_id(*left) != complaint_id(*right)


@FAST
@given(st.tuples(st.text(), st.text(), st.text()), st.tuples(st.text(), st.text(), st.text()))
def test_complaint_id_distinct_for_distinct_triples(
    left: tuple[str, str, str], right: tuple[str, str, str]
) -> None:
    if left != right:
        assert complaint_id(*left) != complaint_id(*right)


def test_tracking_code_format_matches_schema() -> None:
    code = tracking_code(complaint_id("webform", "web", "x"))
    assert SCHEMA_CODE_RE.fullmatch(code), code
    assert re.fullmatch(rf"[{CROCKFORD}]{{5}}-[{CROCKFORD}]{{5}}", code)
    assert not set(code) & set("ILOU")


def test_tracking_code_is_deterministic_and_differs_by_attempt() -> None:
    cid = complaint_id("api", "dinas-pu", "ext-1")
    assert tracking_code(cid) == tracking_code(cid) == tracking_code(cid, 0)
    codes = {tracking_code(cid, attempt) for attempt in range(20)}
    assert len(codes) == 20
    assert tracking_code(cid) != tracking_code(complaint_id("api", "dinas-pu", "ext-2"))


@FAST
@given(st.text(), st.integers(min_value=0, max_value=10_000))
def test_tracking_code_always_matches_schema(cid: str, attempt: int) -> None:
    assert SCHEMA_CODE_RE.fullmatch(tracking_code(cid, attempt))


@FAST
@given(st.text(), st.integers(min_value=0, max_value=10_000))
def test_parse_round_trips(cid: str, attempt: int) -> None:
    code = tracking_code(cid, attempt)
    assert parse_tracking_code(code) == code


@FAST
@given(st.text(), st.sampled_from(["lower", "nohyphen", "spaces", "confusions"]))
def test_parse_accepts_what_citizens_type(cid: str, variant: str) -> None:
    code = tracking_code(cid)
    if variant == "lower":
        typed = code.lower()
    elif variant == "nohyphen":
        typed = code.replace("-", "")
    elif variant == "spaces":
        typed = "  " + " ".join(code.replace("-", "")) + " "
    else:
        typed = code.replace("0", "O").replace("1", "I")
    assert parse_tracking_code(typed) == code


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("abcde-fghjk", "ABCDE-FGHJK"),
        ("ABCDEFGHJK", "ABCDE-FGHJK"),
        ("ABCDE FGHJK", "ABCDE-FGHJK"),
        (" abc de-fg hjk\n", "ABCDE-FGHJK"),
        ("O0O0O-00000", "00000-00000"),
        ("oOoOo-ooooo", "00000-00000"),
        ("I1L1l-iiLLl", "11111-11111"),
        ("1o2i3-l4O5A", "10213-1405A"),
    ],
)
def test_parse_normalises(typed: str, expected: str) -> None:
    assert parse_tracking_code(typed) == expected


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "   ",
        "ABCDE-FGHJ",  # 9 symbols
        "ABCDE-FGHJKM",  # 11 symbols
        "ABCDE",
        "ABCDE-FGHJ!",
        "ABCDE-FGHJ#",
        "ABCDE/FGHJK",
        "ÄBCDE-FGHJK",
        "ABCDE-FGHJK-0",
    ],
)
def test_parse_rejects_wrong_length_or_characters(typed: str) -> None:
    assert parse_tracking_code(typed) is None
