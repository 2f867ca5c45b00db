"""Near-duplicate detection core: is this complaint the same matter as one we already have?

Pure and in memory; the durable store keeps what :meth:`Fingerprint.to_bytes` and
:meth:`Fingerprint.index_keys` return and feeds candidates back (see ``LSHIndex``).

A complaint's :class:`Fingerprint` has three parts:

* a MinHash **signature** (``NUM_PERM`` permutations) of the words of its
  :func:`~normalizer.text.matching_text` (normalised, stopwords removed, stemmed), plus the
  number of words, so that both the Jaccard similarity and the share of the shorter text
  found in the longer one can be estimated from signatures alone;
* its **places**: street names (after jl/jln/jalan/gang), RT and RW numbers, numbered or named
  facilities (SDN 003, Puskesmas Sempaja, Pasar Segiri, KM 5) and the gazetteer's region and
  kelurahan;
* its **categories** from the router (the winner and any close second).

:func:`is_same_matter` says yes only when the places do not contradict each other (a template
sent for Jl. Pahlawan and for Jl. Juanda is two matters, and so are the same street in Samarinda
and in Balikpapan), the categories overlap (a broken lamp and a pothole in the same street are
two matters), the classifications agree, and the texts are similar enough for how close their
places are (:data:`THRESHOLDS`: little text in common is enough for the same street, a near
copy is needed when the texts share no place).

:class:`LSHIndex` finds candidates among many signatures quickly (banding: two signatures
share a band key when a block of ``ROWS_PER_BAND`` hash values is equal).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from normalizer.routing import Router, default_router
from normalizer.text import plain_text, shingles, stem

#: MinHash permutations: 128 gives a Jaccard estimate within about ±0.04.
NUM_PERM = 128
#: Fixed seed: every signature ever stored must use the same permutations.
SEED = 1708
#: LSH banding: 42 bands of 3 rows find a pair with Jaccard 0.45 (a near copy in other words)
#: with probability 0.98 and one with Jaccard 0.1 with 0.04. Pairs that share a place and a
#: category, which need much less text in common, are found through block keys instead.
#: (The first 32 bands alone would save a quarter of a lookup's index probes, but at a million
#: stored complaints they labelled 9 % fewer duplicates in ``bench/dedup_scale.py``: bands also
#: find same-place copies beyond a hot block key's ``per_key`` newest rows.)
ROWS_PER_BAND = 3
#: Words are compared one by one (k=1): complaints are short, paraphrases reorder words.
SIGNATURE_SHINGLE_K = 1
#: Text similarity (see :func:`similar`) two complaints need to be the same matter, by how their
#: places relate (see :func:`place_relation`). A shared street or kelurahan says a lot, so
#: little text in common is enough; with nothing in common the texts must be near copies.
THRESHOLDS: dict[str, float] = {"same-place": 0.2, "same-area": 0.25, "unrelated": 0.6,
                                 "incomparable": 0.9}
#: Categories scoring at least this share of the winner's score also describe the complaint.
CATEGORY_RATIO = 0.6

_MAGIC = b"LGF1"  # fingerprint format version 1
_SIG_MAGIC = b"LGS1"

# ---------------------------------------------------------------------------------------------
# Signatures


@dataclass(frozen=True, eq=False)
class Signature:
    """A MinHash signature of a set of words, and the size of that set."""

    hashvalues: np.ndarray[Any, np.dtype[np.uint32]]
    size: int
    seed: int = SEED

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Signature) and self.size == other.size
                and self.seed == other.seed
                and bool(np.array_equal(self.hashvalues, other.hashvalues)))

    def __hash__(self) -> int:
        return hash((self.size, self.seed, self.hashvalues.tobytes()))

    @property
    def num_perm(self) -> int:
        """The number of hash values."""
        return int(self.hashvalues.shape[0])

    def jaccard(self, other: Signature) -> float:
        """Estimated Jaccard similarity of the two word sets."""
        if self.seed != other.seed or self.num_perm != other.num_perm:
            raise ValueError("signatures made with different permutations cannot be compared")
        if self.size == 0 or other.size == 0:
            return 0.0
        return float(np.count_nonzero(self.hashvalues == other.hashvalues)) / self.num_perm

    def to_bytes(self) -> bytes:
        """A stable binary form: magic, seed, set size, permutations, little-endian uint32s."""
        header = _SIG_MAGIC + struct.pack("<IIH", self.seed, self.size, self.num_perm)
        return header + self.hashvalues.astype("<u4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Signature:
        """Inverse of :meth:`to_bytes`; raises ValueError on anything else."""
        return cls.from_parts(*signature_parts(data))

    @classmethod
    def from_parts(cls, seed: int, size: int, body: bytes | memoryview) -> Signature:
        """The signature of :func:`signature_parts`."""
        return cls(np.frombuffer(body, dtype="<u4").astype(np.uint32, copy=False), size, seed)


def signature_layout(data: bytes, start: int = 0) -> tuple[int, int, int]:
    """The seed, set size and offset of the hash values (little-endian uint32s, to the end)
    of the :meth:`Signature.to_bytes` output at ``data[start:]``. Raises ValueError on
    anything else."""
    if len(data) < start + 14 or data[start:start + 4] != _SIG_MAGIC:
        raise ValueError("not a lapor-gateway MinHash signature")
    seed, size, num_perm = struct.unpack_from("<IIH", data, start + 4)
    if len(data) - (start + 14) != 4 * num_perm:
        raise ValueError("truncated MinHash signature")
    return seed, size, start + 14


def signature_parts(data: bytes, start: int = 0) -> tuple[int, int, memoryview]:
    """The seed, set size and hash values of :func:`signature_layout`, the values a view of
    ``data`` (not copied, not decoded): many candidates' values are joined and read as one
    matrix."""
    seed, size, offset = signature_layout(data, start)
    return seed, size, memoryview(data)[offset:]


#: MurmurHash3's 32-bit finaliser (shift, multiplier, shift, multiplier, shift): each word's
#: hash is mixed with it before the permutations.
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35),
           np.uint32(16))
_MAX_HASH = np.uint32(0xFFFFFFFF)


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray[Any, np.dtype[np.uint32]],
                                                     np.ndarray[Any, np.dtype[np.uint32]]]:
    """The affine permutations ``h -> a * h + b (mod 2**32)`` (an odd ``a``: a bijection), drawn
    from ``seed`` once."""
    draw = np.random.RandomState(seed)
    a = draw.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = draw.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def signature_of_words(words: Iterable[str], *, num_perm: int = NUM_PERM,
                       seed: int = SEED) -> Signature:
    """The MinHash signature of a set of words (or shingles): per permutation, the least
    permuted hash of any word, where a word's hash is the first 4 bytes of its SHA-1
    (little-endian) mixed with :data:`_FMIX32`.

    This is datasketch 2's ``MinHash(num_perm, seed, scheme="affine32")`` to the bit (a test
    holds it to that). It is written out here because stored signatures must never change
    meaning with a library upgrade (datasketch 1 drew other permutations for the same seed),
    and importing datasketch imports scipy: about 50 MiB resident in the gateway and again in
    its intake worker, for these few lines."""
    unique = sorted(set(words))
    if not unique:
        return Signature(np.full(num_perm, _MAX_HASH, dtype=np.uint32), 0, seed)
    hashes = np.array([int.from_bytes(hashlib.sha1(w.encode("utf-8")).digest()[:4], "little")
                       for w in unique], dtype=np.uint32).reshape(-1, 1)
    shift1, mult1, shift2, mult2, shift3 = _FMIX32
    hashes ^= hashes >> shift1
    hashes *= mult1
    hashes ^= hashes >> shift2
    hashes *= mult2
    hashes ^= hashes >> shift3
    a, b = _permutations(num_perm, seed)
    return Signature((hashes * a + b).min(axis=0), len(unique), seed)


def signature(text: str, *, k: int = SIGNATURE_SHINGLE_K) -> Signature:
    """The signature of a complaint text (its matching-text ``k``-shingles)."""
    return signature_of_words(shingles(text, k))


# ---------------------------------------------------------------------------------------------
# Places

#: Words that end or cannot be a street name ("jalan rusak", "jalan di depan ...").
_NOT_A_NAME = frozenset("""
    di ke dari dan yang yg dekat depan samping belakang sebelah arah menuju sampai hingga ujung
    sepanjang simpang pertigaan perempatan rt rw no nomor km kel kelurahan kec kecamatan desa
    kota kab kabupaten gang gg blok rusak berlubang lubang lobang bolong hancur ancur mati padam
    gelap banjir licin becek tergenang macet amblas ambles tertutup putus longsor retak sempit
    lingkungan poros utama raya penghubung kampung setapak tol provinsi nasional desa umum ini
    itu tersebut sudah udh sdh belum blm tidak ga gak nggak mohon tolong min pak bu kak dong
    sekitar wilayah daerah kawasan area masuk keluar lagi juga jg sama sm bikin buat untuk utk
    pada tiap setiap saat waktu jam hari pagi siang sore malam lalu kemarin kmrn banyak bgt
    banget parah sangat sekali pas kalo kalau karena krn jadi sering selalu terus trs
    kami kita saya sy aku kamu mereka dia beliau setempat terdekat tetangga lain sebelahnya
    sana sini situ tsb
""".split())
#: Titles and initials dropped from street names so "Jl. A. Yani" = "Jalan Ahmad Yani".
_TITLES = frozenset("""
    a h hj dr ir kh jend jenderal jendral brigjen mayjen letjen kol kolonel p pangeran mt di
    prof drs st sultan ahmad achmad muhammad moh m mohammad r raden i ki nyi hr
""".split())
_STREET_WORDS = frozenset({"jl", "jln", "jalan", "gg", "gang", "lorong", "komplek", "kompleks",
                           "perum", "perumahan", "blok"})
_VILLAGE_WORDS = frozenset({"kel", "kelurahan", "desa", "ds", "kampung", "dusun"})
_EXPLICIT_STREET = frozenset({"jl", "jln", "gg", "gang", "lorong", "komplek", "kompleks", "perum",
                              "perumahan", "blok"})
_AFFIXED = re.compile(r"^(me|di|ber|ter|pe|ke|se)\w{3,}")
_RT_RW = re.compile(r"\b(rt|rw)\s*0*(\d{1,3})\b")
_NUMBERED = re.compile(
    r"\b(sdn|sd|sd negeri|smpn|smp|smp negeri|sman|sma|sma negeri|smkn|smk|min|mts|km|blok|"
    r"puskesmas|posyandu|tps)\s*0*(\d{1,3})\b")
#: Facilities known by a name ("Pasar Segiri", "Puskesmas Sempaja"): the word after the type.
_NAMED_TYPES = frozenset({"pasar", "masjid", "mesjid", "puskesmas", "rsud", "terminal",
                          "bandara", "stadion", "tpa", "perumahan", "perum", "komplek",
                          "kompleks", "pantai", "pelabuhan", "gor", "simpang", "bundaran"})
_FACILITY_TYPES = {"sd negeri": "sd", "sdn": "sd", "smpn": "smp", "smp negeri": "smp",
                   "sman": "sma", "sma negeri": "sma", "smkn": "smk", "mesjid": "masjid",
                   "perum": "perumahan", "komplek": "perumahan", "kompleks": "perumahan"}
_NUMBER_WORDS = frozenset({"satu", "dua", "tiga", "empat", "lima", "enam", "tujuh", "delapan",
                           "lama", "baru", "besar", "kecil", "induk", "utama", "umum"})


@dataclass(frozen=True)
class Places:
    """The places a complaint names, as comparable keys."""

    streets: frozenset[tuple[str, ...]] = frozenset()
    rt: frozenset[int] = frozenset()
    rw: frozenset[int] = frozenset()
    facilities: frozenset[tuple[str, str]] = frozenset()  # (type, name or number)
    villages: frozenset[str] = frozenset()
    districts: frozenset[str] = frozenset()  # every gazetteer code named
    names: frozenset[str] = frozenset()  # gazetteer names as written, even unresolved ones
    region: str | None = None  # the resolved region code

    def is_empty(self) -> bool:
        """True when the text names no place at all."""
        return not (self.specific() or self.districts or self.region)

    def specific(self) -> bool:
        """True when the text names a place finer than a kabupaten/kota."""
        return bool(self.streets or self.rt or self.rw or self.facilities or self.villages
                    or self.names or any(c.count(".") >= 2 for c in self.districts))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (sorted, so equal places give equal bytes)."""
        return {
            "streets": sorted(" ".join(s) for s in self.streets),
            "rt": sorted(self.rt), "rw": sorted(self.rw),
            "facilities": sorted(f"{t}:{n}" for t, n in self.facilities),
            "villages": sorted(self.villages), "districts": sorted(self.districts),
            "names": sorted(self.names), "region": self.region,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Places:
        """Inverse of :meth:`to_json`."""
        return cls(
            streets=frozenset(tuple(s.split()) for s in data.get("streets", [])),
            rt=frozenset(int(x) for x in data.get("rt", [])),
            rw=frozenset(int(x) for x in data.get("rw", [])),
            facilities=frozenset(_facility(f) for f in data.get("facilities", [])),
            villages=frozenset(data.get("villages", [])),
            districts=frozenset(data.get("districts", [])),
            names=frozenset(data.get("names", [])),
            region=data.get("region"),
        )


def _facility(text: str) -> tuple[str, str]:
    kind, _, name = text.partition(":")
    return kind, name


class _Words:
    """The plain words of a text and what is known about each: capitalised by the citizen,
    start of a gazetteer name."""

    def __init__(self, text: str, gazetteer_starts: set[int], words: list[str]) -> None:
        self.words = words
        self.gazetteer_starts = gazetteer_starts
        letters = [c for c in text if c.isalpha()]
        upper = sum(c.isupper() for c in letters)
        # Casing tells names from words only in mixed-case text (not in SMS capitals or chat
        # lower case).
        self.mixed_case = bool(letters) and 0 < upper < 0.6 * len(letters)
        self.capitalised = {w.lower() for w in re.findall(r"\b[A-Z][\w]*", text)}

    def name_word(self, i: int, *, explicit: bool, first: bool) -> bool:
        """Can word ``i`` be (part of) the name of a street or a facility?"""
        word = self.words[i]
        if word in _NOT_A_NAME or word in _STREET_WORDS or word in _NAMED_TYPES:
            return False
        if word.isdigit() or (not first and i in self.gazetteer_starts):
            return False
        if first and not explicit:
            if self.mixed_case and word not in self.capitalised:
                return False
            if _AFFIXED.match(word) and stem(word) != word:
                return False  # "jalan menuju", "jalan berlubang": not a name
        return True


def _street_name(w: _Words, start: int, explicit: bool) -> tuple[str, ...]:
    """Up to three name words after a street word, titles and initials dropped."""
    name: list[str] = []
    for i in range(start, min(start + 3, len(w.words))):
        if not w.name_word(i, explicit=explicit, first=not name):
            break
        name.append(w.words[i])
    while name and name[0] in _TITLES and len(name) > 1:
        name.pop(0)
    return tuple(name)


def extract_places(text: str, router: Router | None = None) -> Places:
    """The places named in ``text`` (streets, RT/RW, facilities, gazetteer names)."""
    router = router or default_router()
    plain = plain_text(text)
    words = plain.split()
    found = router.gazetteer.find_in_words(words)
    starts = {p.position for p in found}
    covered = {p.position + k for p in found for k in range(len(p.matched_text.split()))}
    w = _Words(text, starts, words)
    streets: set[tuple[str, ...]] = set()
    facilities: set[tuple[str, str]] = set()
    villages = {p.name.lower() for p in found if p.kind == "village"}
    for i, word in enumerate(words[:-1]):
        if word in _VILLAGE_WORDS and i + 1 not in starts:
            # A kelurahan/desa the gazetteer does not know (or cannot tell apart) is still a
            # place: "Kel. Bugis", "Desa Bukit Raya".
            name = _street_name(w, i + 1, explicit=True)
            if name:
                villages.add(" ".join(name))
        if word in _STREET_WORDS and i + 1 not in starts:
            name = _street_name(w, i + 1, word in _EXPLICIT_STREET)
            if name and not (len(name) == 1 and len(name[0]) == 1):
                streets.add(name)
        if word in _NAMED_TYPES and i not in covered and i + 1 not in covered \
                and w.name_word(i + 1, explicit=False, first=True) \
                and words[i + 1] not in _NUMBER_WORDS:
            facilities.add((_FACILITY_TYPES.get(word, word), words[i + 1]))
    rt: set[int] = set()
    rw: set[int] = set()
    for m in _RT_RW.finditer(plain):
        (rt if m.group(1) == "rt" else rw).add(int(m.group(2)))
    for m in _NUMBERED.finditer(plain):
        facilities.add((_FACILITY_TYPES.get(m.group(1), m.group(1)), str(int(m.group(2)))))
    facilities.update(("landmark", p.name.lower()) for p in found if p.kind == "landmark")
    region = router.gazetteer.resolve(found)
    return Places(
        streets=frozenset(streets), rt=frozenset(rt), rw=frozenset(rw),
        facilities=frozenset(facilities),
        villages=frozenset(villages),
        districts=frozenset(p.code for p in found if p.kind != "landmark"),
        names=frozenset(router.gazetteer.names_in_words(words)),
        region=region.value if region else None,
    )


def _regency(code: str) -> str:
    """``64.72.03`` → ``64.72``."""
    return ".".join(code.split(".")[:2])


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _same_street(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """"soekarno hatta" = "hatta"; "ahmad yani" = "yani"; "juanda air hitam" = "juanda" (a
    name runs on into the next words in chat); "pahlawan" ≠ "juanda"."""
    short, long_ = sorted((a, b), key=len)
    return long_[len(long_) - len(short):] == short or long_[:len(short)] == short


def places_conflict(a: Places, b: Places) -> str | None:
    """Why the two sets of places cannot be the same spot, or None when they may be."""
    if a.region and b.region and not _related(a.region, b.region):
        return "region"
    if a.villages and b.villages and not a.villages & b.villages:
        return "kelurahan"
    if a.streets and b.streets and not any(_same_street(x, y) for x in a.streets
                                           for y in b.streets):
        return "street"
    if a.rt and b.rt and not a.rt & b.rt:
        return "rt"
    if a.rw and b.rw and not a.rw & b.rw:
        return "rw"
    a_types = {t for t, _ in a.facilities}
    for kind in a_types & {t for t, _ in b.facilities}:
        if not {n for t, n in a.facilities if t == kind} & {n for t, n in b.facilities
                                                             if t == kind}:
            return f"facility:{kind}"
    return None


def places_shared(a: Places, b: Places) -> bool:
    """True when the two name at least one place finer than a kabupaten/kota in common."""
    if a.villages & b.villages or a.facilities & b.facilities or a.rt & b.rt or a.names & b.names:
        return True
    if any(_same_street(x, y) for x in a.streets for y in b.streets):
        return True
    return any(x == y and x.count(".") >= 2 for x in a.districts for y in b.districts)


def place_relation(a: Places, b: Places) -> str:
    """How the places of two complaints relate, from closest to farthest:

    * ``"conflict:<what>"``: they cannot be the same spot (see :func:`places_conflict`);
    * ``"same-place"``: a street, kelurahan, kecamatan, facility, landmark or RT in common;
    * ``"same-area"``: both name only the same kabupaten/kota (or a region within it), nothing
      finer, e.g. two complaints about "Disdukcapil Balikpapan";
    * ``"unrelated"``: nothing in common to compare, one or both name no finer place;
    * ``"incomparable"``: both name finer places, but of different kinds (a street here, a
      kelurahan there): a template sent for two places looks like this, so only a near
      verbatim copy counts.
    """
    conflict = places_conflict(a, b)
    if conflict is not None:
        return f"conflict:{conflict}"
    if places_shared(a, b):
        return "same-place"
    if a.specific() and b.specific():
        return "incomparable"
    if a.region and b.region and a.region.count(".") >= 1 and b.region.count(".") >= 1 \
            and _regency(a.region) == _regency(b.region) \
            and not a.specific() and not b.specific():
        return "same-area"
    return "unrelated"


# ---------------------------------------------------------------------------------------------
# Fingerprints and the decision


@dataclass(frozen=True)
class Fingerprint:
    """Everything near-duplicate detection needs to know about one complaint."""

    signature: Signature
    places: Places = field(default_factory=Places)
    categories: frozenset[str] = frozenset()
    classification: str | None = None

    def to_bytes(self) -> bytes:
        """Binary form for the durable store: magic, JSON length, JSON, signature bytes."""
        meta = json.dumps({"places": self.places.to_json(),
                           "categories": sorted(self.categories),
                           "classification": self.classification},
                          separators=(",", ":"), ensure_ascii=False).encode()
        return _MAGIC + struct.pack("<I", len(meta)) + meta + self.signature.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, signature: Signature | None = None) -> Fingerprint:
        """Inverse of :meth:`to_bytes`; raises ValueError on anything else. ``signature``:
        the one :meth:`signature_from_bytes` read from ``data`` already."""
        meta = cls.meta_from_bytes(data)
        return cls(signature or Signature.from_bytes(data[8 + len(meta):]), *parse_meta(meta))

    @staticmethod
    def meta_from_bytes(data: bytes) -> bytes:
        """The places, categories and classification of :meth:`to_bytes` output, still encoded
        (equal bytes: equal metadata)."""
        return data[8:8 + _meta_length(data)]

    @staticmethod
    def signature_from_bytes(data: bytes) -> Signature:
        """Only the signature of :meth:`to_bytes` output (cheaper than :meth:`from_bytes`:
        a store's candidates are screened on it before their places are read)."""
        return Signature.from_parts(*Fingerprint.signature_parts(data))

    @staticmethod
    def signature_layout(data: bytes) -> tuple[int, int, int]:
        """:func:`signature_layout` of the signature in :meth:`to_bytes` output (the offset
        from the start of ``data``)."""
        return signature_layout(data, 8 + _meta_length(data))

    @staticmethod
    def signature_parts(data: bytes) -> tuple[int, int, memoryview]:
        """:func:`signature_parts` of the signature in :meth:`to_bytes` output."""
        return signature_parts(data, 8 + _meta_length(data))

    def index_keys(self) -> list[str]:
        """Keys under which a store indexes this fingerprint: the LSH band keys of the
        signature plus :meth:`block_keys`. Two complaints that may be the same matter share at
        least one key (with high probability), so a store finds candidates by key lookup."""
        return band_keys(self.signature) + self.block_keys()

    def block_keys(self) -> list[str]:
        """``"b:<category>|<place>"`` for each category and each place finer than a
        kabupaten/kota (kelurahan, name, first and last word of a street, facility, kecamatan),
        or the kabupaten/kota when there is none: the pairs that :func:`is_same_matter`
        accepts on little text in common."""
        p = self.places
        spots = ({f"v:{v}" for v in p.villages} | {f"n:{n}" for n in p.names}
                 | {f"s:{s[i]}" for s in p.streets for i in (0, -1)}
                 | {f"f:{k}:{n}" for k, n in p.facilities}
                 | {f"d:{d}" for d in p.districts if d.count(".") >= 2})
        if not spots:
            spots = {f"r:{_regency(p.region) if p.region else '-'}"}
        return sorted(f"b:{c}|{spot}" for c in self.categories for spot in spots)


def categories_of(text: str, router: Router) -> frozenset[str]:
    """The winning category and any scoring at least CATEGORY_RATIO of it."""
    scores = router.category_scores(text)
    if not scores:
        return frozenset()
    top = max(scores.values())
    return frozenset(c for c, s in scores.items() if s >= CATEGORY_RATIO * top)


def fingerprint(text: str, router: Router | None = None) -> Fingerprint:
    """The fingerprint of a complaint text (title and body joined, as the citizen wrote them)."""
    router = router or default_router()
    return Fingerprint(signature(text), extract_places(text, router), categories_of(text, router),
                       router.classify(text).value)


def _as_fingerprint(x: Fingerprint | str) -> Fingerprint:
    return x if isinstance(x, Fingerprint) else fingerprint(x)


def similar(a: Fingerprint | str, b: Fingerprint | str) -> float:
    """How alike two complaint texts are, 0–1, from their signatures.

    The mean of the Jaccard similarity and of the share of the shorter text's words found in
    the longer one: a short SMS restating a long web form scores high without two unrelated
    texts that share a few common words doing so.
    """
    return signature_similarity(_as_fingerprint(a).signature, _as_fingerprint(b).signature)


def signature_similarity(sa: Signature, sb: Signature) -> float:
    """:func:`similar` of two signatures."""
    return float(similarities(sa, [sb])[0])


def similarities(sig: Signature, others: Sequence[Signature]
                 ) -> np.ndarray[Any, np.dtype[np.float64]]:
    """:func:`similar` of ``sig`` and each of ``others``, computed at once (a store's
    candidates are screened with it)."""
    if not others:
        return np.zeros(0)
    if any(o.seed != sig.seed for o in others) \
            or any(o.hashvalues.shape != sig.hashvalues.shape for o in others):
        raise ValueError("signatures made with different permutations cannot be compared")
    return similarity_scores(sig, np.stack([o.hashvalues for o in others]),
                             np.array([o.size for o in others], dtype=np.float64))


def similarity_scores(sig: Signature, matrix: np.ndarray[Any, np.dtype[Any]],
                      sizes: np.ndarray[Any, np.dtype[Any]]
                      ) -> np.ndarray[Any, np.dtype[np.float64]]:
    """:func:`similarities` of ``sig`` and signatures given as a ``(n, num_perm)`` matrix of
    hash values (same seed) and their ``n`` set sizes: a store's candidates decoded at once,
    without a :class:`Signature` each."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if not len(sizes):
        return np.zeros(0)
    jaccard = np.count_nonzero(matrix == sig.hashvalues, axis=1) / sig.num_perm
    jaccard[(sizes == 0) | (sig.size == 0)] = 0.0
    shared = jaccard * (sig.size + sizes) / (1.0 + jaccard)
    smaller = np.maximum(np.minimum(sizes, sig.size), 1.0)
    containment = np.minimum(1.0, shared / smaller)
    out: np.ndarray[Any, np.dtype[np.float64]] = np.where(jaccard > 0,
                                                          (jaccard + containment) / 2.0, 0.0)
    return out


def _meta_length(data: bytes) -> int:
    """The length of the metadata in :meth:`Fingerprint.to_bytes` output (it starts at byte 8,
    the signature follows it); raises ValueError on anything else."""
    if len(data) < 8 or data[:4] != _MAGIC:
        raise ValueError("not a lapor-gateway fingerprint")
    (length,) = struct.unpack_from("<I", data, 4)
    return int(length)


#: A fingerprint's places, categories and classification: all but its signature.
Meta = tuple[Places, frozenset[str], str | None]


def parse_meta(meta: bytes) -> Meta:
    """The :data:`Meta` of :meth:`Fingerprint.meta_from_bytes` output; raises ValueError when
    it is corrupt."""
    try:
        data = json.loads(meta)
        return (Places.from_json(data["places"]),
                frozenset(str(c) for c in data["categories"]), data.get("classification"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError("corrupt fingerprint metadata") from exc


def matter_relation(a: Fingerprint, b: Fingerprint) -> tuple[str | None, str]:
    """What :func:`same_matter_reason` decides before comparing texts: the places' relation
    (a key of :data:`THRESHOLDS`) and ``""``, or None and why the two cannot be the same
    matter. It reads places, categories and classification only, so candidates that share
    them (copies of one complaint) need it once."""
    return meta_relation(a, (b.places, b.categories, b.classification))


def meta_relation(a: Fingerprint, b: Meta) -> tuple[str | None, str]:
    """:func:`matter_relation` of ``a`` and a fingerprint whose :data:`Meta` is ``b``."""
    places, categories, classification = b
    relation = place_relation(a.places, places)
    if relation.startswith("conflict:"):
        return None, f"different {relation.removeprefix('conflict:')}"
    if a.categories and categories and not a.categories & categories:
        return None, "different category"
    if a.classification and classification and a.classification != classification:
        return None, "different classification"
    return relation, ""


def threshold_reason(relation: str, score: float) -> tuple[bool, str]:
    """Whether texts scoring ``score`` (:func:`similar`) are similar enough for places that
    relate as ``relation``, and the reason (``"same-place, similar 0.62 >= 0.20"``)."""
    needed = THRESHOLDS[relation]
    verdict = ">=" if score >= needed else "<"
    return score >= needed, f"{relation}, similar {score:.2f} {verdict} {needed:.2f}"


def same_matter_reason(a: Fingerprint | str, b: Fingerprint | str) -> tuple[bool, str]:
    """:func:`is_same_matter` with its reason (``"same-place, similar 0.62 >= 0.20"``, ...)."""
    fa, fb = _as_fingerprint(a), _as_fingerprint(b)
    relation, why = matter_relation(fa, fb)
    if relation is None:
        return False, why
    return threshold_reason(relation, similar(fa, fb))


def is_same_matter(a: Fingerprint | str, b: Fingerprint | str) -> bool:
    """True when two complaints report the same matter (see the module docstring)."""
    return same_matter_reason(a, b)[0]


# ---------------------------------------------------------------------------------------------
# LSH index


def band_keys(sig: Signature, rows: int = ROWS_PER_BAND) -> list[str]:
    """The LSH band keys of a signature: ``"<band>:<hex of its rows>"``, one per band."""
    values = sig.hashvalues
    bands = len(values) // rows
    return [f"{b}:{values[b * rows:(b + 1) * rows].astype('<u4').tobytes().hex()}"
            for b in range(bands)]


# Index keys as 64-bit integers, for a durable store: a B-tree of (key, time, complaint) rows
# stays small and a lookup is one index probe a key.

_MIX_START = np.uint64(0x9E3779B97F4A7C15)  # splitmix64 constants
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def band_hashes(hashvalues: np.ndarray[Any, np.dtype[Any]],
                rows: int = ROWS_PER_BAND) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The LSH band keys of one signature (``(num_perm,)``) or many (``(n, num_perm)``) as
    signed 64-bit integers, one per band: equal bands give equal keys, and the band number
    is mixed in, so band 3 of one signature never meets band 5 of another. Vectorised, so a
    benchmark can fill a store with a million complaints through this same function."""
    values = np.atleast_2d(np.asarray(hashvalues, dtype=np.uint64))
    bands = values.shape[1] // rows
    blocks = values[:, :bands * rows].reshape(values.shape[0], bands, rows)
    h = (np.arange(1, bands + 1, dtype=np.uint64) * _MIX_START)[np.newaxis, :].repeat(
        values.shape[0], axis=0)
    for r in range(rows):
        h = (h ^ blocks[:, :, r]) * _MIX_1
        h ^= h >> np.uint64(31)
        h *= _MIX_2
        h ^= h >> np.uint64(29)
    out: np.ndarray[Any, np.dtype[np.int64]] = h.view(np.int64)
    return out[0] if np.ndim(hashvalues) == 1 else out


def key_hash(key: str) -> int:
    """A block key (see :meth:`Fingerprint.block_keys`) as a signed 64-bit integer."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little",
                          signed=True)


def index_hashes(fp: Fingerprint) -> list[int]:
    """:meth:`Fingerprint.index_keys` as integers: the band keys, then the block keys."""
    return [int(h) for h in band_hashes(fp.signature.hashvalues)] + \
        [key_hash(k) for k in fp.block_keys()]


@dataclass(frozen=True)
class Candidate:
    """A stored signature that shares at least one band with the query."""

    key: Hashable
    meta: Any
    jaccard: float


class LSHIndex:
    """An in-memory LSH index over MinHash signatures (banding, ``rows`` hash values a band).

    ``add`` stores a signature with any metadata under a key; ``query`` returns the stored
    entries that share a band with a signature, most similar first. Pure Python dicts: a store
    keeps the same (index key, complaint) pairs in an indexed table and looks candidates up
    there instead (see :meth:`Fingerprint.index_keys`).
    """

    def __init__(self, rows: int = ROWS_PER_BAND) -> None:
        if rows < 1:
            raise ValueError("rows per band must be at least 1")
        self.rows = rows
        self._buckets: dict[str, set[Hashable]] = {}
        self._entries: dict[Hashable, tuple[Signature, Any, list[str]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._entries)

    def add(self, key: Hashable, signature: Signature, meta: Any = None, *,
            extra_keys: Iterable[str] = ()) -> None:
        """Store ``signature`` under ``key`` (replacing an earlier one with that key).

        ``extra_keys`` (e.g. :meth:`Fingerprint.block_keys`) are indexed beside the bands: a
        query with the same extra key finds this entry whatever the signatures.
        """
        if key in self._entries:
            self.remove(key)
        keys = band_keys(signature, self.rows) + list(extra_keys)
        self._entries[key] = (signature, meta, keys)
        for band in keys:
            self._buckets.setdefault(band, set()).add(key)

    def remove(self, key: Hashable) -> None:
        """Forget ``key`` (no error when it is unknown)."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for band in entry[2]:
            bucket = self._buckets.get(band)
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self._buckets[band]

    def get(self, key: Hashable) -> tuple[Signature, Any] | None:
        """The signature and metadata stored under ``key``."""
        entry = self._entries.get(key)
        return (entry[0], entry[1]) if entry is not None else None

    def query(self, signature: Signature, *, min_jaccard: float = 0.0,
              extra_keys: Iterable[str] = ()) -> list[Candidate]:
        """Stored entries sharing a band (or an extra key) with ``signature``, highest estimated
        Jaccard first."""
        keys: set[Hashable] = set()
        for band in band_keys(signature, self.rows) + list(extra_keys):
            keys |= self._buckets.get(band, set())
        found = []
        for key in keys:
            stored, meta, _ = self._entries[key]
            score = signature.jaccard(stored)
            if score >= min_jaccard:
                found.append(Candidate(key, meta, score))
        found.sort(key=lambda c: (-c.jaccard, str(c.key)))
        return found


class DuplicateFinder:
    """Fingerprints in an :class:`LSHIndex`, and the same-matter decision on its candidates.

    ``check(key, text)`` returns the keys of earlier complaints about the same matter (best
    first) and then remembers this one, so a stream of complaints can be clustered in order.
    """

    def __init__(self, router: Router | None = None, rows: int = ROWS_PER_BAND) -> None:
        self.router = router or default_router()
        self.index = LSHIndex(rows)

    def fingerprint(self, text: str) -> Fingerprint:
        """The fingerprint of ``text`` with this finder's router."""
        return fingerprint(text, self.router)

    def matches(self, fp: Fingerprint) -> list[Hashable]:
        """Keys of indexed complaints that are the same matter as ``fp``, most similar first."""
        scored: list[tuple[float, Hashable]] = []
        for candidate in self.index.query(fp.signature, extra_keys=fp.block_keys()):
            other: Fingerprint = candidate.meta
            if is_same_matter(fp, other):
                scored.append((similar(fp, other), candidate.key))
        scored.sort(key=lambda s: (-s[0], str(s[1])))
        return [key for _, key in scored]

    def add(self, key: Hashable, fp: Fingerprint) -> None:
        """Index ``fp`` under ``key``."""
        self.index.add(key, fp.signature, fp, extra_keys=fp.block_keys())

    def check(self, key: Hashable, text: str) -> list[Hashable]:
        """Same-matter keys of ``text`` among those seen so far; then index it under ``key``."""
        fp = self.fingerprint(text)
        found = self.matches(fp)
        self.add(key, fp)
        return found


__all__ = [
    "Candidate", "DuplicateFinder", "Fingerprint", "LSHIndex", "Places",
    "Signature", "band_hashes", "band_keys", "extract_places", "fingerprint", "index_hashes",
    "is_same_matter", "key_hash", "matter_relation", "Meta", "meta_relation", "parse_meta",
    "places_conflict", "same_matter_reason",
    "signature", "signature_layout", "signature_parts", "signature_similarity", "similar",
    "similarities", "similarity_scores", "threshold_reason",
]
