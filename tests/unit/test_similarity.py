"""Near-duplicate detection: signatures, places, the same-matter decision and the LSH index."""

from __future__ import annotations

import pytest

from normalizer.routing import Router, default_router
from normalizer.similarity import (
    DuplicateFinder,
    Fingerprint,
    LSHIndex,
    Places,
    Signature,
    band_keys,
    extract_places,
    fingerprint,
    is_same_matter,
    place_relation,
    same_matter_reason,
    signature,
    signature_of_words,
    similar,
)


@pytest.fixture(scope="module")
def router() -> Router:
    return default_router()


# --- signatures -------------------------------------------------------------------------------


def test_signature_round_trips_through_bytes() -> None:
    sig = signature("Lampu jalan di Jl. Pahlawan mati sudah seminggu")
    data = sig.to_bytes()
    assert isinstance(data, bytes)
    assert Signature.from_bytes(data) == sig
    assert len(data) == 14 + 4 * sig.num_perm


def test_signature_is_deterministic() -> None:
    text = "air pdam mati 3 hari"
    assert signature(text).to_bytes() == signature(text).to_bytes()


def test_bad_signature_bytes_are_refused() -> None:
    with pytest.raises(ValueError):
        Signature.from_bytes(b"nope")
    with pytest.raises(ValueError):
        Signature.from_bytes(signature("jalan").to_bytes()[:-4])


def test_jaccard_estimate() -> None:
    a = signature_of_words(f"w{i}" for i in range(100))
    b = signature_of_words(f"w{i}" for i in range(50, 150))
    assert a.jaccard(a) == 1.0
    assert abs(a.jaccard(b) - 1 / 3) < 0.12
    assert signature_of_words([]).jaccard(a) == 0.0


def test_signatures_with_other_permutations_do_not_compare() -> None:
    with pytest.raises(ValueError):
        signature_of_words(["a"], num_perm=64).jaccard(signature_of_words(["a"]))


# --- places -----------------------------------------------------------------------------------


def test_places_of_a_complaint(router: Router) -> None:
    places = extract_places(
        "Lampu jalan di Jl. A. Yani depan SDN 003, RT 05/RW 02, Kel. Sidodadi mati", router)
    assert places.streets == {("yani",)}
    assert places.rt == {5} and places.rw == {2}
    assert ("sd", "3") in places.facilities
    assert places.villages == {"sidodadi"}
    assert places.region == "64.72.03"


def test_street_name_stops_at_ordinary_words(router: Router) -> None:
    assert extract_places("jalan rusak di jalan menuju sekolah", router).streets == frozenset()
    assert extract_places("jln pahlawan banyak lubang", router).streets == {("pahlawan",)}
    assert extract_places("Jl Pahlawan Samarinda lubangnya", router).streets == {("pahlawan",)}


def test_places_round_trip_json(router: Router) -> None:
    places = extract_places("Pasar Segiri, Jl. Gatot Subroto RT 3 Kel. Bandara", router)
    assert Places.from_json(places.to_json()) == places


@pytest.mark.parametrize(("a", "b", "relation"), [
    ("lampu mati di Jl. Pahlawan", "lampu mati di Jl. Juanda", "conflict:street"),
    ("lampu mati di jl ahmad yani samarinda", "lampu mati di jl a yani balikpapan",
     "conflict:region"),
    ("air mati di Kel. Batu Ampar", "air mati di Kel. Gunung Samarinda", "conflict:kelurahan"),
    ("selokan mampet gg kenanga rt 07", "selokan mampet gg kenanga rt 15", "conflict:rt"),
    ("atap SDN 003 bocor", "atap SDN 012 bocor", "conflict:facility:sd"),
    ("lampu mati Jl. Soekarno Hatta", "lampu mati di jalan Hatta", "same-place"),
    ("Disdukcapil Balikpapan offline", "capil bpp sistem down", "same-area"),
    ("lampu jalan mati", "PJU padam di Jl. Juanda", "unrelated"),
    ("air mati di Jl. Juanda", "air mati di Kel. Sidodadi", "incomparable"),
    ("air mati di Kel. Bugis", "air mati di Kel. Lamaru", "conflict:kelurahan"),  # unresolved
    ("air mati di desa Bukit Raya", "air mati di Desa Sumber Sari", "conflict:kelurahan"),
])
def test_place_relation(router: Router, a: str, b: str, relation: str) -> None:
    assert place_relation(extract_places(a, router), extract_places(b, router)) == relation


# --- the decision -------------------------------------------------------------------------------


def test_same_matter_worded_differently(router: Router) -> None:
    a = fingerprint("Lampu penerangan jalan umum di Jl. Pahlawan, Kel. Dadi Mulya mati total "
                    "sudah seminggu. Malam hari sangat gelap. Mohon segera diperbaiki.", router)
    b = fingerprint("LAMPU JALAN JL PAHLAWAN DADI MULYA SMD MATI SUDAH 1 MINGGU MOHON "
                    "DIPERBAIKI", router)
    assert is_same_matter(a, b)
    assert 0.2 <= similar(a, b) <= 1.0


def test_template_for_another_street_is_another_matter() -> None:
    a = "lampu jalan mati di Jl. Pahlawan, sudah seminggu gelap, mohon diperbaiki"
    b = "lampu jalan mati di Jl. Juanda, sudah seminggu gelap, mohon diperbaiki"
    assert similar(a, b) > 0.6
    assert same_matter_reason(a, b) == (False, "different street")


def test_same_place_other_problem_is_another_matter() -> None:
    a = "Lampu jalan di Jl. Pahlawan mati semua, gelap"
    b = "Jalan di Jl. Pahlawan berlubang besar, bahaya"
    assert same_matter_reason(a, b) == (False, "different category")


def test_templates_for_different_places_never_merge(router: Router) -> None:
    finder = DuplicateFinder(router)
    villages = ["Sidodadi", "Air Hitam", "Lempake", "Bugis", "Pelita", "Lamaru", "Manggar",
                "Bukit Raya", "Sumber Sari", "Loa Bakung", "Api-Api", "Kanaan"]
    streets = ["Pahlawan", "Juanda", "A. Yani", "Sudirman", "Gatot Subroto", "Mawar"]
    texts = [f"Air PDAM di Kel. {v} mati sudah 3 hari, mohon segera diperbaiki"
             for v in villages]
    texts += [f"lampu jalan di jl {s} mati udh seminggu, gelap bgt" for s in streets]
    texts += [f"selokan mampet di gg mawar rt 0{n}, bau bgt" for n in range(1, 5)]
    for key, text in enumerate(texts):
        assert finder.check(key, text) == [], text


def test_unrelated_texts_need_a_near_copy() -> None:
    ok, _ = same_matter_reason("KTP saya belum jadi sudah dua bulan",
                               "KTP saya hilang, bagaimana cara mengurus yang baru?")
    assert not ok


def test_identical_texts_are_the_same_matter() -> None:
    text = "Sampah di TPS Pasar Segiri menumpuk 4 hari tidak diangkut"
    assert is_same_matter(text, text)


def test_fingerprint_round_trips_through_bytes(router: Router) -> None:
    fp = fingerprint("Air PDAM di Kel. Batu Ampar Balikpapan Utara mati 4 hari", router)
    again = Fingerprint.from_bytes(fp.to_bytes())
    assert again == fp
    assert is_same_matter(again, fp)
    with pytest.raises(ValueError):
        Fingerprint.from_bytes(b"LGF1\xff\xff\xff\x7f{")
    with pytest.raises(ValueError):
        Fingerprint.from_bytes(b"other")
    with pytest.raises(ValueError):
        Fingerprint.from_bytes(b"LGF1\x02\x00\x00\x00{}")


def test_index_keys_cover_bands_and_blocks(router: Router) -> None:
    fp = fingerprint("Air PDAM di Kel. Batu Ampar mati", router)
    keys = fp.index_keys()
    assert keys[:len(band_keys(fp.signature))] == band_keys(fp.signature)
    assert "b:air_bersih|v:batu ampar" in keys


# --- the index ----------------------------------------------------------------------------------


def test_lsh_index_add_query_remove() -> None:
    index = LSHIndex()
    words = [f"w{i}" for i in range(40)]
    index.add("a", signature_of_words(words), {"n": 1})
    index.add("b", signature_of_words([f"x{i}" for i in range(40)]))
    found = index.query(signature_of_words(words[:38] + ["y1", "y2"]))
    assert [c.key for c in found] == ["a"]
    assert found[0].meta == {"n": 1} and found[0].jaccard > 0.7
    assert len(index) == 2 and "a" in index and set(index) == {"a", "b"}
    index.remove("a")
    index.remove("missing")
    assert index.query(signature_of_words(words)) == []
    assert index.get("a") is None


def test_lsh_index_replaces_a_key_and_uses_extra_keys() -> None:
    index = LSHIndex()
    index.add("a", signature_of_words(["p"]), extra_keys=["block"])
    index.add("a", signature_of_words(["q"]), extra_keys=["block"])
    assert len(index) == 1
    found = index.query(signature_of_words(["zzz"]), extra_keys=["block"])
    assert [c.key for c in found] == ["a"]
    with pytest.raises(ValueError):
        LSHIndex(rows=0)


def test_duplicate_finder_clusters_a_stream(router: Router) -> None:
    finder = DuplicateFinder(router)
    assert finder.check(1, "Air PDAM di Kel. Batu Ampar Balikpapan Utara mati sudah 4 hari") == []
    assert finder.check(2, "Air PDAM di Kel. Gunung Samarinda Balikpapan Utara mati 3 hari") == []
    assert finder.check(3, "4 hari air ga ngalir di batu ampar bpp, @PDAMBalikpapan") == [1]
    assert finder.check(4, "jalan berlubang di Kel. Batu Ampar Balikpapan") == []
