"""The near-duplicate decision: is a new complaint the same matter as one already stored?

Pure, no I/O. The intake computes the complaint's :class:`~normalizer.similarity.Fingerprint`
(:func:`fingerprint_of`), asks the durable index for the stored complaints sharing one of its
:func:`~normalizer.similarity.index_hashes` (LSH band keys and place/category block keys) within
the time window, and hands them to :func:`decide`. The verdict names the cluster's first
complaint (``duplicate_of``) and the cluster (``cluster_id``, the id of that first complaint),
with the rule that made it; :func:`apply` writes both and the rule (``audit.decisions``) into
the complaint. A near duplicate is always forwarded: this module only labels.

The rule: a candidate is the same matter when :func:`~normalizer.similarity.same_matter_reason`
says so (places that do not contradict, overlapping categories, the same classification, text
similar enough for how close the places are) *and* the stored complaint's region and agency
agree with the new one's (a region within the other's counts as agreeing; an unknown one never
contradicts). Among several matches the most similar wins (ties: the oldest cluster).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from normalizer.routing import Router
from normalizer.schema import Complaint
from normalizer.similarity import (
    THRESHOLDS,
    Fingerprint,
    Meta,
    Signature,
    fingerprint,
    meta_relation,
    parse_meta,
    similarities,
    similarity_scores,
    threshold_reason,
)

#: The audit key under which the rule is recorded.
DECISION_KEY = "duplicate_of"


#: No threshold of :data:`~normalizer.similarity.THRESHOLDS` is lower: a candidate whose
#: signature scores less is screened out before its places are read.
MIN_SIMILARITY = min(THRESHOLDS.values())


#: Parsed places, categories and classification kept, by their stored bytes (about 3 KiB
#: each): candidates that store the same ones (copies of one complaint) share them, and a
#: store's cache of stored fingerprints keeps only bytes (about 1 KiB each) whatever was read.
META_CACHE = 4096


@lru_cache(maxsize=META_CACHE)
def _parsed_meta(meta: bytes) -> Meta:
    return parse_meta(meta)


class StoredFingerprint:
    """A complaint the index returned as a candidate, its fingerprint as stored
    (:meth:`Fingerprint.to_bytes`), read only as far as needed: the signature's values
    (:meth:`signature_parts`, decoded by :func:`decide` for all candidates at once),
    then the places of the few candidates similar enough (parsed into a bounded cache shared
    by all entries, :data:`META_CACHE`)."""

    __slots__ = ("_layout", "agency", "cluster_id", "complaint_id", "data", "received_us",
                 "region")

    def __init__(self, complaint_id: str, cluster_id: str, data: bytes,
                 region: str | None = None, agency: str | None = None,
                 received_us: int = 0) -> None:
        self.complaint_id = complaint_id
        self.cluster_id = cluster_id
        self.data = data
        self.region = region
        self.agency = agency
        self.received_us = received_us
        self._layout: tuple[int, int, int] | None = None

    def __repr__(self) -> str:
        return f"StoredFingerprint({self.complaint_id!r}, cluster {self.cluster_id!r})"

    @classmethod
    def of(cls, complaint_id: str, cluster_id: str, fp: Fingerprint, region: str | None = None,
           agency: str | None = None, received_us: int = 0) -> StoredFingerprint:
        """A candidate from a fingerprint in memory."""
        return cls(complaint_id, cluster_id, fp.to_bytes(), region, agency, received_us)

    def signature_parts(self) -> tuple[int, int, memoryview]:
        """Seed, set size and undecoded hash values (a view of the stored bytes) of the stored
        signature (:meth:`Fingerprint.signature_parts`); raises ValueError when the bytes are
        corrupt. Where they are is worked out once and kept (not a copy of the values: an
        entry of the store's cache would carry them twice)."""
        if self._layout is None:
            self._layout = Fingerprint.signature_layout(self.data)
        seed, size, offset = self._layout
        return seed, size, memoryview(self.data)[offset:]

    @property
    def signature(self) -> Signature:
        """The stored signature; raises ValueError when the bytes are corrupt."""
        return Signature.from_parts(*self.signature_parts())

    @property
    def meta(self) -> bytes:
        """The stored places, categories and classification, still encoded."""
        return Fingerprint.meta_from_bytes(self.data)

    @property
    def parsed_meta(self) -> Meta:
        """The stored places, categories and classification, parsed (from the shared cache);
        raises ValueError when the bytes are corrupt."""
        return _parsed_meta(self.meta)

    @property
    def fingerprint(self) -> Fingerprint:
        """The whole stored fingerprint; raises ValueError when the bytes are corrupt."""
        return Fingerprint(self.signature, *self.parsed_meta)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :func:`decide` found: the cluster this complaint joins (None: a new matter)."""

    duplicate_of: str | None
    cluster_id: str | None
    rule: str
    candidates: int
    similarity: float = 0.0

    @property
    def is_duplicate(self) -> bool:
        """True when the complaint joins an existing cluster."""
        return self.duplicate_of is not None


def fingerprint_of(complaint: Complaint, router: Router | None = None) -> Fingerprint:
    """The fingerprint of a complaint's words (title and body as the citizen wrote them)."""
    return fingerprint(f"{complaint.title}\n{complaint.body}", router)


def region_of(complaint: Complaint) -> str | None:
    """The complaint's region code, if any."""
    return complaint.location.region_code if complaint.location else None


def _regions_agree(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _agencies_agree(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a.casefold() == b.casefold()


def _relation(fp: Fingerprint, region: str | None, agency: str | None,
              other: StoredFingerprint) -> tuple[str | None, str]:
    """:func:`~normalizer.similarity.matter_relation` with region and agency agreement."""
    if not _regions_agree(region, other.region):
        return None, "different region"
    if not _agencies_agree(agency, other.agency):
        return None, "different agency"
    return meta_relation(fp, other.parsed_meta)


def match_reason(fp: Fingerprint, region: str | None, agency: str | None,
                 other: StoredFingerprint) -> tuple[bool, str]:
    """Whether ``other`` is the same matter, and why (or why not)."""
    relation, why = _relation(fp, region, agency, other)
    if relation is None:
        return False, why
    return threshold_reason(relation, similarities(fp.signature, [other.signature])[0])


def decide(fp: Fingerprint, candidates: Iterable[StoredFingerprint], *,
           region: str | None = None, agency: str | None = None,
           own_id: str | None = None) -> Verdict:
    """The cluster, if any, that a complaint with fingerprint ``fp`` joins (see the module
    docstring). ``own_id`` is skipped (a redelivery finds itself in the index); a candidate
    whose stored bytes are corrupt is skipped (it can be missed, never mis-matched).

    Candidates are tried most similar first (ties: the oldest), so the first match is the
    verdict; the places/region/agency part of the rule is worked out once for candidates
    storing the same metadata (copies of one complaint)."""
    readable: list[StoredFingerprint] = []
    bodies: list[memoryview] = []
    sizes: list[int] = []
    seed, width = fp.signature.seed, 4 * fp.signature.num_perm
    seen = 0
    for other in candidates:
        if other.complaint_id == own_id:
            continue
        seen += 1
        try:
            other_seed, size, body = other.signature_parts()
        except ValueError:  # corrupt: skipped
            continue
        if other_seed == seed and len(body) == width:
            readable.append(other)
            bodies.append(body)
            sizes.append(size)
    matrix = np.frombuffer(b"".join(bodies), dtype="<u4").reshape(len(bodies), width // 4)
    scores = similarity_scores(fp.signature, matrix, np.asarray(sizes)).tolist()
    ranked = sorted((i for i in range(len(readable)) if scores[i] >= MIN_SIMILARITY),
                    key=lambda i: (-scores[i], readable[i].received_us))
    relations: dict[tuple[bytes, str | None, str | None], tuple[str | None, str]] = {}
    for i in ranked:
        other, score = readable[i], scores[i]
        try:
            key = (other.meta, other.region, other.agency)
            known = relations.get(key)
            if known is None:
                known = relations[key] = _relation(fp, region, agency, other)
        except ValueError:
            continue
        relation = known[0]
        if relation is None:
            continue
        same, reason = threshold_reason(relation, score)
        if same:
            rule = f"near-duplicate of {other.complaint_id}: {reason}"
            return Verdict(other.cluster_id, other.cluster_id, rule, seen, score)
    return Verdict(None, None, f"no near duplicate among {seen} candidates", seen)


def apply(complaint: Complaint, verdict: Verdict) -> Complaint:
    """The complaint with ``duplicate_of``/``cluster_id`` and the rule set (unchanged when the
    verdict found no duplicate)."""
    if not verdict.is_duplicate:
        return complaint
    decisions = {**complaint.audit.decisions, DECISION_KEY: verdict.rule}
    audit = complaint.audit.model_copy(update={"decisions": decisions})
    return complaint.model_copy(update={"duplicate_of": verdict.duplicate_of,
                                        "cluster_id": verdict.cluster_id, "audit": audit})


__all__ = ["DECISION_KEY", "MIN_SIMILARITY", "StoredFingerprint", "Verdict", "apply", "decide",
           "fingerprint_of", "match_reason", "region_of"]
