"""Matching text: normalisation for comparison (never shown), tokens and shingles."""

from __future__ import annotations

import pytest

from normalizer.text import (
    expand_abbreviations,
    matching_text,
    plain_text,
    routing_text,
    shingles,
    stem,
    tokens,
)


def test_matching_text_of_a_chat_message() -> None:
    text = "Lampu jln di dpn SDN 003 udh matiii 3 hr!!! 😡 https://t.co/x"
    assert matching_text(text) == "lampu jalan depan sdn 003 mati 3"


def test_matching_text_never_changes_the_input() -> None:
    text = "Jalan RUSAK parah!!"
    matching_text(text)
    assert text == "Jalan RUSAK parah!!"


def test_nfc_and_lower_case() -> None:
    assert plain_text("Caf\u0065\u0301 JALAN") == "caf\u00e9 jalan"


def test_html_tags_entities_scripts_are_removed() -> None:
    html = "<p>Jalan&nbsp;<b>rusak</b> &amp; berlubang</p><script>alert(1)</script>"
    assert plain_text(html) == "jalan rusak berlubang"


def test_urls_emails_and_mentions_are_removed() -> None:
    text = "Lihat https://lapor.go.id/x dan www.contoh.id/a, kirim ke a.b@mail.id @pemkot"
    assert plain_text(text) == "lihat dan kirim ke"


def test_mentions_are_kept_as_words_for_routing() -> None:
    assert routing_text("@PDAMBalikpapan air mati") == "pdambalikpapan air mati"


def test_emoji_and_punctuation_become_spaces() -> None:
    assert plain_text("rusak!!!😡🙏,parah...") == "rusak parah"


def test_question_marks_are_kept_for_routing() -> None:
    assert routing_text("kpn dibuka?") == "kapan dibuka ?"


@pytest.mark.parametrize(("short", "full"), [
    ("yg", "yang"), ("tdk", "tidak"), ("gak", "tidak"), ("ga", "tidak"), ("nggak", "tidak"),
    ("udh", "sudah"), ("sdh", "sudah"), ("blm", "belum"), ("jln", "jalan"), ("jl", "jalan"),
    ("sy", "saya"), ("bgt", "banget"), ("kpn", "kapan"), ("utk", "untuk"), ("dgn", "dengan"),
    ("dr", "dari"), ("krn", "karena"), ("tsb", "tersebut"), ("sdg", "sedang"),
    ("kmrn", "kemarin"), ("bs", "bisa"), ("org", "orang"), ("tp", "tapi"), ("lg", "lagi"),
    ("sm", "sama"),
])
def test_abbreviations_are_expanded(short: str, full: str) -> None:
    assert expand_abbreviations([short]) == full.split()


def test_dll_expands_to_several_words() -> None:
    assert expand_abbreviations(["dll"]) == ["dan", "lain", "lain"]


def test_repeated_letters_are_squashed() -> None:
    assert plain_text("rusaaak parahhh gelappp") == "rusak parah gelap"


def test_double_letter_words_survive_squashing() -> None:
    assert plain_text("saaaat maaaaf") == "saat maaf"
    assert plain_text("2000 111") == "2000 111"  # digits are never squashed


def test_reduplication_is_shortened() -> None:
    assert plain_text("anak-anak anak2 lampu2") == "anak anak lampu"


def test_stopwords_are_removed_and_words_stemmed() -> None:
    assert tokens("Jalan yang berlubang dan tidak diperbaiki") == ["jalan", "lubang", "baik"]


def test_stem_is_memoized_and_keeps_codes() -> None:
    stem.cache_clear()
    assert stem("perbaikan") == "baik"
    assert stem("perbaikan") == "baik"
    assert stem.cache_info().hits >= 1
    assert stem("sdn003") == "sdn003"
    assert stem("rt") == "rt"


def test_synonyms_make_paraphrases_compare_equal() -> None:
    assert matching_text("PJU padam") == matching_text("lampu jalan mati")


def test_shingles_include_words_and_k_grams() -> None:
    assert shingles("jalan rusak parah", k=2) == {
        "jalan", "rusak", "parah", "jalan rusak", "rusak parah"}
    assert shingles("jalan rusak parah", k=1) == {"jalan", "rusak", "parah"}


def test_shingles_reject_k_below_one() -> None:
    with pytest.raises(ValueError):
        shingles("jalan", k=0)


def test_empty_text() -> None:
    assert matching_text("") == ""
    assert tokens("  !!! 😡 ") == []
    assert shingles("") == set()
