"""The near-duplicate decision (normalizer/dedup.py) and the integer index keys it is found by."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest

from normalizer.dedup import (
    DECISION_KEY,
    MIN_SIMILARITY,
    StoredFingerprint,
    apply,
    decide,
    fingerprint_of,
    region_of,
)
from normalizer.routing import Router
from normalizer.schema import Audit, Complaint, Location
from normalizer.similarity import (
    NUM_PERM,
    SEED,
    Fingerprint,
    band_hashes,
    band_keys,
    fingerprint,
    index_hashes,
    key_hash,
    signature,
    signature_of_words,
    signature_similarity,
    similar,
    similarities,
    similarity_scores,
)
from normalizer.text import shingles

EVAL_SET = Path(__file__).resolve().parents[1] / "data" / "complaints_eval.jsonl"
LAMP = ("Lampu penerangan jalan di Jl. Pahlawan Samarinda sudah mati seminggu, malam sangat "
        "gelap dan rawan begal.")
LAMP_SMS = "LAMPU JLN PAHLAWAN SAMARINDA MATI UDH SEMINGGU, GELAP BGT MALAM"
LAMP_OTHER_STREET = LAMP.replace("Pahlawan", "Juanda")
POTHOLE = "Jalan berlubang besar di Jl. Pahlawan Samarinda, sudah ada pengendara jatuh."


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.from_files()


def stored(cid: str, text: str, router: Router, *, cluster: str | None = None,
           received_us: int = 0, region: str | None = None,
           agency: str | None = None) -> StoredFingerprint:
    return StoredFingerprint.of(cid, cluster or cid, fingerprint(text, router), region, agency,
                                received_us)


def test_band_hashes_of_many_equal_those_of_one() -> None:
    sigs = [signature(t) for t in (LAMP, LAMP_SMS, POTHOLE)]
    many = band_hashes(np.stack([s.hashvalues for s in sigs]))
    for row, sig in zip(many, sigs, strict=True):
        assert list(row) == list(band_hashes(sig.hashvalues))
    assert many.dtype == np.int64 and many.shape == (3, len(band_keys(sigs[0])))


def test_equal_bands_give_equal_keys_and_the_band_number_counts() -> None:
    values = signature(LAMP).hashvalues.copy()
    keys = band_hashes(values)
    changed = values.copy()
    changed[0] ^= 1  # only band 0 differs
    other = band_hashes(changed)
    assert keys[0] != other[0] and list(keys[1:]) == list(other[1:])
    same_rows = np.tile(values[:3], len(values) // 3 + 1)[:len(values)]
    assert len(set(band_hashes(same_rows).tolist())) == len(keys)  # band 3 never meets band 5


def test_index_keys_are_stable_across_versions() -> None:
    """Stored keys must keep meaning the same thing: a change here orphans every index."""
    values = np.arange(128, dtype=np.uint32) * np.uint32(2654435761)
    assert band_hashes(values)[:2].tolist() == [5617766010832649759, -2829816160436672900]
    assert key_hash("b:pju.lampu_jalan|s:pahlawan") == 7204238718525741524


def test_index_hashes_cover_bands_and_blocks(router: Router) -> None:
    fp = fingerprint(LAMP, router)
    hashes = index_hashes(fp)
    assert hashes[:len(band_keys(fp.signature))] == band_hashes(fp.signature.hashvalues).tolist()
    assert hashes[len(band_keys(fp.signature)):] == [key_hash(k) for k in fp.block_keys()]
    assert fp.block_keys()


def test_vectorised_similarity_equals_the_pairwise_one(router: Router) -> None:
    fps = [fingerprint(t, router) for t in (LAMP, LAMP_SMS, LAMP_OTHER_STREET, POTHOLE)]
    scores = similarities(fps[0].signature, [f.signature for f in fps])
    assert scores.tolist() == pytest.approx([similar(fps[0], f) for f in fps])
    assert scores[0] == 1.0 and signature_similarity(fps[0].signature, fps[3].signature) < 1.0
    assert similarities(fps[0].signature, []).shape == (0,)


def test_the_same_matter_joins_the_cluster_with_its_rule(router: Router) -> None:
    fp = fingerprint(LAMP_SMS, router)
    verdict = decide(fp, [stored("a" * 32, LAMP, router, cluster="c" * 32),
                          stored("b" * 32, POTHOLE, router)])
    assert (verdict.duplicate_of, verdict.cluster_id) == ("c" * 32, "c" * 32)
    assert verdict.rule.startswith(f"near-duplicate of {'a' * 32}: same-place, similar")
    assert verdict.candidates == 2 and verdict.similarity >= MIN_SIMILARITY


def test_templates_for_another_street_and_other_problems_stay_apart(router: Router) -> None:
    verdict = decide(fingerprint(LAMP, router), [stored("a" * 32, LAMP_OTHER_STREET, router),
                                                 stored("b" * 32, POTHOLE, router)])
    assert not verdict.is_duplicate
    assert verdict.rule == "no near duplicate among 2 candidates"


def test_region_and_agency_must_agree(router: Router) -> None:
    fp = fingerprint(LAMP_SMS, router)
    kaltim = "64.72"
    assert decide(fp, [stored("a" * 32, LAMP, router, region="64.71")],
                  region=kaltim).duplicate_of is None
    assert decide(fp, [stored("a" * 32, LAMP, router, region="64.72.05")],
                  region=kaltim).duplicate_of == "a" * 32  # a kecamatan within the kota
    assert decide(fp, [stored("a" * 32, LAMP, router, agency="Dinas Perhubungan")],
                  agency="PLN").duplicate_of is None
    assert decide(fp, [stored("a" * 32, LAMP, router, agency="PLN")],
                  agency="pln").duplicate_of == "a" * 32


def test_best_match_wins_then_the_oldest(router: Router) -> None:
    fp = fingerprint(LAMP, router)
    close = stored("a" * 32, LAMP, router, received_us=20)
    older_copy = stored("b" * 32, LAMP, router, received_us=10)
    looser = stored("c" * 32, LAMP_SMS, router, received_us=1)
    assert decide(fp, [looser, close, older_copy]).duplicate_of == "b" * 32


def test_own_id_and_corrupt_candidates_are_skipped(router: Router) -> None:
    fp = fingerprint(LAMP, router)
    corrupt = StoredFingerprint("d" * 32, "d" * 32, b"LGF1\x00\x00garbage")
    half = StoredFingerprint("e" * 32, "e" * 32, fp.to_bytes()[:40])
    verdict = decide(fp, [stored("a" * 32, LAMP, router), corrupt, half], own_id="a" * 32)
    assert not verdict.is_duplicate and verdict.candidates == 2


def test_stored_fingerprint_reads_what_was_written(router: Router) -> None:
    fp = fingerprint(LAMP, router)
    entry = StoredFingerprint.of("a" * 32, "a" * 32, fp)
    assert entry.signature == fp.signature
    assert entry.fingerprint == fp
    assert Fingerprint.signature_from_bytes(fp.to_bytes()) == fp.signature
    with pytest.raises(ValueError):
        Fingerprint.signature_from_bytes(b"nope")


def _complaint(body: str, region: str | None = None) -> Complaint:
    return Complaint(id="f" * 32, tracking_code="ABCDE-FGHJK", channel="sms", native_id="n1",
                     received_at=datetime.now(UTC), title=body[:40], body=body,
                     location=Location(region_code=region) if region else None,
                     audit=Audit(connector="sms", gateway_version="t", account="main",
                                 decisions={"category": "pju.lampu_jalan"}))


def test_apply_sets_the_cluster_and_keeps_other_decisions(router: Router) -> None:
    complaint = _complaint(LAMP_SMS, "64.72")
    assert region_of(complaint) == "64.72" and region_of(_complaint(LAMP)) is None
    fp = fingerprint_of(complaint, router)
    verdict = decide(fp, [stored("a" * 32, LAMP, router)], region=region_of(complaint))
    labelled = apply(complaint, verdict)
    assert (labelled.duplicate_of, labelled.cluster_id) == ("a" * 32, "a" * 32)
    assert labelled.audit.decisions == {"category": "pju.lampu_jalan",
                                        DECISION_KEY: verdict.rule}
    assert apply(complaint, decide(fp, [])) is complaint
    Complaint.from_json(labelled.to_json())  # still a valid v1 complaint


def test_signatures_are_datasketchs_affine32_minhash_to_the_bit() -> None:
    """Stored signatures keep their meaning: every one is what datasketch 2's
    ``MinHash(scheme="affine32")`` of the same seed gives, for every text of the labelled set
    (and the empty set); the permutations made once are not changed by use."""
    from datasketch import MinHash  # type: ignore[import-untyped,unused-ignore]

    texts = [orjson.loads(line)["text"] for line in EVAL_SET.read_text().splitlines()]
    word_sets = [sorted(shingles(t, 1)) for t in texts] + [[], ["lampu", "jalan", "mati"]]
    assert len(word_sets) > 100
    for words in word_sets:
        reference = MinHash(num_perm=NUM_PERM, seed=SEED, scheme="affine32")
        reference.update_batch([w.encode() for w in words])
        assert signature_of_words(words).hashvalues.tolist() == \
            np.asarray(reference.hashvalues).astype(np.uint32).tolist(), words
    first, second = signature_of_words(["a", "b"]), signature_of_words(["c"])
    assert signature_of_words(["a", "b"]) == first and first != second  # copies do not leak


def test_candidates_are_screened_as_one_matrix(router: Router) -> None:
    fps = [fingerprint(t, router) for t in (LAMP, LAMP_SMS, LAMP_OTHER_STREET, POTHOLE)]
    matrix = np.stack([f.signature.hashvalues for f in fps])
    sizes = np.array([f.signature.size for f in fps])
    assert similarity_scores(fps[1].signature, matrix, sizes).tolist() == \
        similarities(fps[1].signature, [f.signature for f in fps]).tolist()
    entry = StoredFingerprint.of("a" * 32, "a" * 32, fps[0])
    seed, size, body = entry.signature_parts()
    assert (seed, size) == (fps[0].signature.seed, fps[0].signature.size)
    assert np.frombuffer(body, dtype="<u4").tolist() == fps[0].signature.hashvalues.tolist()
    # A view of the stored bytes: an entry of the store's cache does not carry them twice.
    assert isinstance(body, memoryview) and body.obj is entry.data
    with pytest.raises(ValueError):
        StoredFingerprint("b" * 32, "b" * 32, b"LGF1\x00\x00\x00\x00LGS1").signature_parts()
