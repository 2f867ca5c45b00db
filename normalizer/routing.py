"""Routing: a complaint's classification, category, target agency (OPD) and region.

Every decision is explainable: it is a :class:`Decision` that names the rule which made it and
the words that rule matched, so an operator can see *why* a complaint went to Dinas PUPR and
fix the rule when it is wrong.

The rules are data that operators edit, packaged under ``config/``:

* ``config/rules/classification.toml``: classification rules (pengaduan / aspirasi /
  permintaan_informasi), the categories with the agency each one belongs to, and the category
  rules;
* ``config/rules/agencies.toml``: the agencies (OPD) and rules for explicit mentions of them;
* ``config/gazetteer_kaltim.json``: the kabupaten/kota, kecamatan, kelurahan and landmarks of
  Kalimantan Timur with their Kemendagri codes.

A rule has an ``id``, the ``value`` it votes for, a ``weight`` and regular expressions
(``patterns``, any of which must match; ``unless``, none of which may match). Patterns are
matched against :func:`normalizer.text.routing_text`: lower case, punctuation removed (``?``
kept), abbreviations expanded, words otherwise as the citizen wrote them. Each value's score is
the sum of the weights of its matching rules; the highest score wins (ties: the rule defined
first), and the decision names the heaviest matching rule of the winner.

:class:`Router` loads and validates the files once (a bad rule is a :class:`ConfigError` naming
the file and the rule), precompiles every pattern, and is then used for any number of
complaints. Pure: no I/O after construction.
"""

from __future__ import annotations

import json
import re
import re._parser as re_parser  # type: ignore[import-not-found]  # no stubs; stable since 3.11
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from errors import ConfigError
from normalizer.schema import Classification
from normalizer.text import TEXT_CACHE, routing_text

CLASSIFICATION_FILE = "rules/classification.toml"
AGENCIES_FILE = "rules/agencies.toml"
GAZETTEER_FILE = "gazetteer_kaltim.json"

_M = TypeVar("_M", bound=BaseModel)
PlaceKind = Literal["province", "regency", "district", "village", "landmark"]

#: Words after which a place name is stated explicitly ("Kel. Pelita", "Kecamatan Sebulu").
ADMIN_PREFIXES = frozenset({
    "kel", "kelurahan", "desa", "ds", "kec", "kecamatan", "kampung", "kota", "kab", "kabupaten",
    "kampong", "dusun", "wilayah",
})
#: Words before a river's name: "Sungai Karang Mumus" and "Sungai Segah" are rivers, not Kel.
#: Karang Mumus or Kec. Segah (places named "Sungai ..." are gazetteer entries of their own).
RIVER_WORDS = frozenset({"sungai", "sei", "kali"})
#: What kind of place a prefix announces ("Kel. Batu Ampar" is the kelurahan, not the kecamatan).
_PREFIX_KINDS: dict[str, PlaceKind] = {
    "kel": "village", "kelurahan": "village", "desa": "village", "ds": "village",
    "kampung": "village", "kampong": "village", "dusun": "village", "kec": "district",
    "kecamatan": "district", "kota": "regency", "kab": "regency", "kabupaten": "regency",
}
#: An explicitly prefixed place counts this much more than a bare mention when resolving.
PREFIXED_WEIGHT = 2.0


@dataclass(frozen=True, slots=True)
class Decision:
    """One routing decision and its explanation: the value, the rule that decided it, the words
    that rule matched (in :func:`routing_text` form) and the winning score."""

    value: str
    rule_id: str
    matched_text: str
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class Place:
    """A place named in a text, found through the gazetteer."""

    kind: PlaceKind
    code: str  # the Kemendagri code it resolves to (a village resolves to its kecamatan)
    name: str  # canonical name from the gazetteer
    matched_text: str  # the words as matched (routing_text form)
    position: int  # index of its first word in routing_text(text).split()
    prefixed: bool  # stated after kel./kec./desa/...


@dataclass(frozen=True, slots=True)
class Routing:
    """Everything the router decided about one complaint."""

    classification: Decision
    category: Decision | None
    agency: Decision | None
    region: Decision | None
    places: tuple[Place, ...]

    def rule_ids(self) -> list[str]:
        """The ids of the rules behind each decision (for hit counts)."""
        return [d.rule_id for d in (self.classification, self.category, self.agency, self.region)
                if d is not None]


# --------------------------------------------------------------------------------------------
# File models (validated with pydantic; any error becomes ConfigError naming file and rule)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Strict):
    """One keyword/regex rule as written in a TOML file."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.:-]*$", max_length=80)
    value: str = Field(min_length=1)
    patterns: list[str] = Field(min_length=1)
    unless: list[str] = Field(default_factory=list)
    weight: float = Field(1.0, gt=0, le=100)
    note: str = ""

    @field_validator("patterns", "unless")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not pattern.strip():
                raise ValueError("empty pattern")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a regular expression: {exc}") \
                    from exc
        return patterns


class CategorySpec(_Strict):
    """A complaint category and the agency that handles it by default."""

    name: str
    agency: str


class ClassificationSection(_Strict):
    """The ``[classification]`` table: default and rules."""

    default: Classification = Classification.PENGADUAN
    default_weight: float = Field(0.5, ge=0)
    rules: list[dict[str, Any]] = Field(default_factory=list)


class ClassificationFile(_Strict):
    """``config/rules/classification.toml``."""

    version: Literal[1]
    classification: ClassificationSection
    categories: dict[str, CategorySpec] = Field(min_length=1)
    category_rules: list[dict[str, Any]] = Field(default_factory=list)


class AgencySpec(_Strict):
    """An agency (OPD or service company) complaints are routed to."""

    name: str
    level: Literal["kabupaten/kota", "provinsi", "pusat", "bumn/bumd"] = "kabupaten/kota"
    note: str = ""


class AgenciesFile(_Strict):
    """``config/rules/agencies.toml``."""

    version: Literal[1]
    agencies: dict[str, AgencySpec] = Field(min_length=1)
    agency_rules: list[dict[str, Any]] = Field(default_factory=list)


class VillageSpec(_Strict):
    name: str
    aliases: list[str] = Field(default_factory=list)
    needs_prefix: bool = False


class DistrictSpec(_Strict):
    code: str = Field(pattern=r"^\d{2}\.\d{2}\.\d{2}$")
    name: str
    aliases: list[str] = Field(default_factory=list)
    needs_prefix: bool = False
    code_uncertain: bool = False
    villages: list[VillageSpec] = Field(default_factory=list)


class RegencySpec(_Strict):
    code: str = Field(pattern=r"^\d{2}\.\d{2}$")
    name: str
    kind: Literal["kabupaten", "kota"]
    aliases: list[str] = Field(default_factory=list)
    districts: list[DistrictSpec] = Field(min_length=1)


class ProvinceSpec(_Strict):
    code: str = Field(pattern=r"^\d{2}$")
    name: str
    aliases: list[str] = Field(default_factory=list)


class LandmarkSpec(_Strict):
    name: str
    region: str = Field(pattern=r"^\d{2}(\.\d{2}){0,2}$")
    aliases: list[str] = Field(default_factory=list)
    note: str = ""


class GazetteerFile(_Strict):
    """``config/gazetteer_kaltim.json``."""

    version: Literal[1]
    description: str = ""
    notes: list[str] = Field(default_factory=list)
    province: ProvinceSpec
    regencies: list[RegencySpec] = Field(min_length=1)
    landmarks: list[LandmarkSpec] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Compiled rules


@dataclass(frozen=True, slots=True)
class _Rule:
    id: str
    value: str
    weight: float
    pattern: re.Pattern[str]
    unless: re.Pattern[str] | None
    #: What a match can begin with (see :func:`_match_starts`); None: anything.
    starts: frozenset[str] | None = None

    def match(self, text: str) -> str | None:
        """The words this rule matched in ``text``, or None."""
        if self.unless is not None and self.unless.search(text):
            return None
        found = self.pattern.search(text)
        return found.group(0).strip() if found else None


# A prefilter that skips the rules which cannot match: most rules are ``\b(word|word|...)``, so
# a match begins at a word start with one of a few known letter sequences. A rule whose
# patterns all start so gets the set of its possible first PREFIX_LEN characters; a text gets
# the set of the first 1..PREFIX_LEN characters of each of its words; disjoint sets mean the
# rule's regular expressions need not run (they were most of the cost of routing).
PREFIX_LEN = 3
PREFIX_LIMIT = 512  # more possible beginnings than this: no prefilter for the rule
_WORD_START = re.compile(r"\b\w")
_WORD_CHAR = re.compile(r"\w")


class _NoPrefix(Exception):
    """The pattern's beginnings cannot be listed (a class like ``\\w``, a flag, too many)."""


def _match_starts(patterns: Sequence[str]) -> frozenset[str] | None:
    """Every possible first ``PREFIX_LEN`` characters (fewer for a shorter match) of a match of
    any of ``patterns``, when each starts with ``\\b`` and then a word character; else None."""
    out: set[str] = set()
    for pattern in patterns:
        try:
            parsed = re_parser.parse(pattern)
            if parsed.state.flags & ~re.UNICODE:
                return None
            items = list(parsed)
            if not items or items[0] != (re_parser.AT, re_parser.AT_BOUNDARY):
                return None
            found = _walk(items[1:], {""})
        except (_NoPrefix, re.error, RecursionError):
            return None
        if any(not s or not _WORD_CHAR.match(s[0]) for s in found):
            return None
        out |= found
    return frozenset(out)


def _walk(items: Sequence[tuple[Any, Any]], states: set[str]) -> set[str]:
    """Extend each partial beginning in ``states`` by what ``items`` can match next."""
    for op, av in items:
        done = {s for s in states if len(s) >= PREFIX_LEN}
        active = states - done
        if not active:
            return states
        if op is re_parser.LITERAL:
            active = {s + chr(av) for s in active}
        elif op is re_parser.IN:
            chars = _charset(av)
            active = {s + c for s in active for c in chars}
        elif op is re_parser.BRANCH:
            active = set().union(*(_walk(list(branch), active) for branch in av[1]))
        elif op is re_parser.SUBPATTERN:
            if av[1] or av[2]:
                raise _NoPrefix
            active = _walk(list(av[3]), active)
        elif op in (re_parser.MAX_REPEAT, re_parser.MIN_REPEAT):
            low, high, sub = av
            result = set(active) if low == 0 else set()
            current = active
            for count in range(1, min(high, PREFIX_LEN) + 1):
                current = _walk(list(sub), current)
                if count >= low:
                    result |= current
            if low > PREFIX_LEN:
                result |= current
            active = result
        elif op in (re_parser.AT, re_parser.ASSERT, re_parser.ASSERT_NOT):
            pass  # consumes nothing; ignoring it only widens the set
        else:
            raise _NoPrefix
        states = done | active
        if len(states) > PREFIX_LIMIT:
            raise _NoPrefix
    return states


def _charset(items: Sequence[tuple[Any, Any]]) -> list[str]:
    chars: list[str] = []
    for op, av in items:
        if op is re_parser.LITERAL:
            chars.append(chr(av))
        elif op is re_parser.RANGE and av[1] - av[0] < 64:
            chars.extend(chr(c) for c in range(av[0], av[1] + 1))
        else:
            raise _NoPrefix
    return chars


@lru_cache(maxsize=16)
def _text_starts(text: str) -> frozenset[str]:
    """The first 1..PREFIX_LEN characters of every word of ``text``."""
    return frozenset(text[m.start():m.start() + k] for m in _WORD_START.finditer(text)
                     for k in range(1, PREFIX_LEN + 1))


def _alternation(patterns: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def _compile_rules(raw: Iterable[dict[str, Any]], source: str, known: Iterable[str],
                   what: str, seen: set[str]) -> list[_Rule]:
    """Validate and compile rules, failing with ConfigError(file, rule) on the first bad one."""
    known_values = set(known)
    rules: list[_Rule] = []
    for index, item in enumerate(raw, 1):
        name = item.get("id") if isinstance(item, dict) else None
        label = f"rule {name!r}" if isinstance(name, str) else f"rule #{index}"
        try:
            spec = RuleSpec.model_validate(item)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {label}: {_first_error(exc)}") from exc
        if spec.value not in known_values:
            raise ConfigError(
                f"{source}: rule {spec.id!r}: unknown {what} {spec.value!r} "
                f"(known: {', '.join(sorted(known_values))})")
        if spec.id in seen:
            raise ConfigError(f"{source}: rule {spec.id!r}: duplicate rule id")
        seen.add(spec.id)
        rules.append(_Rule(spec.id, spec.value, spec.weight, _alternation(spec.patterns),
                           _alternation(spec.unless) if spec.unless else None,
                           _match_starts(spec.patterns)))
    return rules


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


_Best = dict[str, tuple[_Rule, str]]


def _vote(rules: Sequence[_Rule], text: str) -> tuple[dict[str, float], _Best]:
    """Sum the weights of matching rules per value; remember each value's heaviest rule."""
    scores: dict[str, float] = {}
    best: dict[str, tuple[_Rule, str]] = {}
    starts = _text_starts(text)
    for rule in rules:
        if rule.starts is not None and rule.starts.isdisjoint(starts):
            continue  # no word of the text begins the way a match must
        matched = rule.match(text)
        if matched is None:
            continue
        scores[rule.value] = scores.get(rule.value, 0.0) + rule.weight
        if rule.value not in best or rule.weight > best[rule.value][0].weight:
            best[rule.value] = (rule, matched)
    return scores, best


def _winner(scores: dict[str, float]) -> str | None:
    """The value with the highest score; dicts keep insertion (rule) order, so ties go to the
    value whose first matching rule comes first in the file."""
    if not scores:
        return None
    top = max(scores.values())
    return next(v for v, s in scores.items() if s == top)


# --------------------------------------------------------------------------------------------
# Gazetteer


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: PlaceKind
    code: str
    name: str
    needs_prefix: bool


def _lineage(code: str) -> tuple[str, ...]:
    """``64.72.03`` → ``("64", "64.72", "64.72.03")``."""
    parts = code.split(".")
    return tuple(".".join(parts[:i]) for i in range(1, len(parts) + 1))


def _related(a: str, b: str) -> bool:
    """True when one code is the other or contains it."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


class Gazetteer:
    """Finds the places of Kalimantan Timur named in a text and resolves the region."""

    def __init__(self, spec: GazetteerFile) -> None:
        self.spec = spec
        self._index: dict[tuple[str, ...], list[_Entry]] = {}
        province = spec.province
        self._names: dict[str, str] = {province.code: province.name}
        self._add("province", province.code, province.name, [province.name, *province.aliases])
        for regency in spec.regencies:
            self._names[regency.code] = regency.name
            self._add("regency", regency.code, regency.name, regency.aliases)
            for district in regency.districts:
                self._names[district.code] = district.name
                self._add("district", district.code, district.name,
                          [district.name, *district.aliases], district.needs_prefix)
                for village in district.villages:
                    self._add("village", district.code, village.name,
                              [village.name, *village.aliases], village.needs_prefix)
        for landmark in spec.landmarks:
            self._add("landmark", landmark.region, landmark.name,
                      [landmark.name, *landmark.aliases])
        self._longest = max(len(key) for key in self._index)

    def _add(self, kind: PlaceKind, code: str, name: str, names: Iterable[str],
             needs_prefix: bool = False) -> None:
        for written in names:
            key = tuple(routing_text(written).split())
            if not key:
                continue
            entry = _Entry(kind, code, name, needs_prefix)
            bucket = self._index.setdefault(key, [])
            if entry not in bucket:
                bucket.append(entry)

    def name_of(self, code: str) -> str | None:
        """The official name of a region code, if known."""
        return self._names.get(code)

    def codes(self) -> set[str]:
        """Every region code in the gazetteer (province, kabupaten/kota, kecamatan)."""
        return set(self._names)

    def find(self, text: str) -> list[Place]:
        """The places named in ``text``, longest name first at each position, after dropping
        street names, unconfirmed common words and unresolvable ambiguous names."""
        return self.find_in_words(routing_text(text).split())

    def _scan(self, words: Sequence[str]) -> list[tuple[int, int, list[_Entry], bool]]:
        """Every gazetteer name in ``words``, longest first at each position: (start, length,
        entries with that name, stated after a prefix)."""
        raw: list[tuple[int, int, list[_Entry], bool]] = []
        i = 0
        while i < len(words):
            for n in range(min(self._longest, len(words) - i), 0, -1):
                entries = self._index.get(tuple(words[i:i + n]))
                if entries:
                    break
            else:
                i += 1
                continue
            if i == 0 or words[i - 1] not in RIVER_WORDS:  # "sungai karang mumus": a river
                raw.append((i, n, entries, i > 0 and words[i - 1] in ADMIN_PREFIXES))
            i += n
        return raw

    def names_in_words(self, words: Sequence[str]) -> list[str]:
        """Every gazetteer name below kabupaten/kota level written in ``words``, confirmed or
        not ("batu ampar" even where it cannot be told which Batu Ampar is meant)."""
        return [" ".join(words[start:start + n]) for start, n, entries, _ in self._scan(words)
                if any(e.kind in ("district", "village", "landmark") for e in entries)]

    def find_in_words(self, words: Sequence[str]) -> list[Place]:
        """:meth:`find` on words already in :func:`routing_text` form."""
        raw = self._scan(words)
        # Codes stated unambiguously, by a name that is not an ordinary word or after a prefix:
        # the context that confirms a common-word name ("air putih samarinda") or picks one of
        # several places with the same name ("batu ampar bpp").
        anchors = [(k, entries[0].code) for k, (_, _, entries, prefixed) in enumerate(raw)
                   if len({e.code for e in entries}) == 1
                   and (prefixed or not entries[0].needs_prefix)]
        places: list[Place] = []
        for k, (start, n, entries, prefixed) in enumerate(raw):
            context = [code for j, code in anchors if j != k]
            kind = _PREFIX_KINDS.get(words[start - 1]) if prefixed else None
            if kind is not None and any(e.kind == kind for e in entries):
                entries = [e for e in entries if e.kind == kind]  # "Kel. Batu Ampar"
            usable = [e for e in entries if prefixed or not e.needs_prefix
                      or any(_related(e.code, c) for c in context)]
            if len({e.code for e in usable}) > 1:
                usable = [e for e in usable if any(_related(e.code, c) for c in context)]
            if len({e.code for e in usable}) != 1:
                continue  # a common word, or ambiguous with nothing in the text to decide
            entry = usable[0]
            places.append(Place(entry.kind, entry.code, entry.name,
                                " ".join(words[start:start + n]), start, prefixed))
        return places

    def resolve(self, places: Sequence[Place]) -> Decision | None:
        """The region of a text from its places: the most specific code that the most
        mentions agree with (explicitly prefixed mentions count double), ties to the deepest
        and then the first mentioned."""
        if not places:
            return None
        best: tuple[float, int, int] | None = None
        chosen: Place | None = None
        for place in places:
            support = sum(
                PREFIXED_WEIGHT if other.prefixed else 1.0 for other in places
                if place.code == other.code or place.code.startswith(other.code + "."))
            key = (support, place.code.count("."), -place.position)
            if best is None or key > best:
                best, chosen = key, place
        assert chosen is not None and best is not None
        return Decision(chosen.code, f"gazetteer:{chosen.kind}:{chosen.name}",
                        chosen.matched_text, best[0])


# --------------------------------------------------------------------------------------------
# The router


class Router:
    """Classification, category, agency and region rules, loaded and compiled once."""

    def __init__(self, classification: ClassificationFile, agencies: AgenciesFile,
                 gazetteer: GazetteerFile, *, sources: tuple[str, str, str] = (
                     CLASSIFICATION_FILE, AGENCIES_FILE, GAZETTEER_FILE)) -> None:
        c_src, a_src, _ = sources
        for cat_id, cat in classification.categories.items():
            if cat.agency not in agencies.agencies:
                raise ConfigError(f"{c_src}: category {cat_id!r}: unknown agency {cat.agency!r}"
                                  f" (not defined in {a_src})")
        seen: set[str] = set()
        self.default_classification = Decision(
            classification.classification.default.value, "default", "",
            classification.classification.default_weight)
        self._class_rules = _compile_rules(
            classification.classification.rules, c_src, (c.value for c in Classification),
            "classification", seen)
        self._category_rules = _compile_rules(
            classification.category_rules, c_src, classification.categories, "category", seen)
        self._agency_rules = _compile_rules(
            agencies.agency_rules, a_src, agencies.agencies, "agency", seen)
        self.categories = dict(classification.categories)
        self.agencies = dict(agencies.agencies)
        self.gazetteer = Gazetteer(gazetteer)
        # Normalising a complaint and fingerprinting it vote on the same routing text: the
        # votes are remembered for the last few texts (the results are never mutated).
        self._remember_votes()

    def _remember_votes(self) -> None:
        self._classify = lru_cache(maxsize=TEXT_CACHE)(self._classify_rtext)
        self._category_vote = lru_cache(maxsize=TEXT_CACHE)(self._category_vote_rtext)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (the intake worker gets the parent's very rules): the vote caches
        are left out and made anew."""
        state = dict(self.__dict__)
        del state["_classify"], state["_category_vote"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._remember_votes()

    @classmethod
    def from_files(cls, classification: Path | Traversable | None = None,
                   agencies: Path | Traversable | None = None,
                   gazetteer: Path | Traversable | None = None) -> Router:
        """Load the rule files (default: the ones packaged under ``config/``).

        Raises :class:`ConfigError` naming the file (and the rule) when one is unreadable or
        invalid.
        """
        base = resources.files("config")
        c_path = classification or base.joinpath(*CLASSIFICATION_FILE.split("/"))
        a_path = agencies or base.joinpath(*AGENCIES_FILE.split("/"))
        g_path = gazetteer or base.joinpath(*GAZETTEER_FILE.split("/"))
        c_name, a_name, g_name = (_display(p) for p in (c_path, a_path, g_path))
        c_file = _load(ClassificationFile, _read_toml(c_path, c_name), c_name)
        a_file = _load(AgenciesFile, _read_toml(a_path, a_name), a_name)
        g_file = _load(GazetteerFile, _read_json(g_path, g_name), g_name)
        return cls(c_file, a_file, g_file, sources=(c_name, a_name, g_name))

    def classify(self, text: str) -> Decision:
        """pengaduan / aspirasi / permintaan_informasi (the default when nothing matches)."""
        return self._classify(routing_text(text))

    def _classify_rtext(self, rtext: str) -> Decision:
        votes, best = _vote(self._class_rules, rtext)
        default = self.default_classification
        scores = {default.value: default.score}  # first, so that a tie goes to the default
        for value, score in votes.items():
            scores[value] = scores.get(value, 0.0) + score
        winner = _winner(scores)
        if winner is None or winner not in best:
            return Decision(default.value, default.rule_id, "", scores[default.value])
        rule, matched = best[winner]
        return Decision(winner, rule.id, matched, scores[winner])

    def route(self, text: str, *, location: str | None = None) -> Routing:
        """Every decision for one complaint. ``location`` (the form's lokasi field) is
        preferred for the region when it names a known place."""
        words = routing_text(text).split()
        rtext = " ".join(words)
        classification = self._classify(rtext)
        cat_scores, cat_best = self._category_vote(rtext)
        cat_value = _winner(cat_scores)
        category = None
        if cat_value is not None:
            rule, matched = cat_best[cat_value]
            category = Decision(cat_value, rule.id, matched, cat_scores[cat_value])
        agency = self._agency(rtext, cat_scores, cat_best)
        places = tuple(self.gazetteer.find_in_words(words))
        region = None
        if location:
            region = self.gazetteer.resolve(self.gazetteer.find(location))
        if region is None:
            region = self.gazetteer.resolve(places)
        return Routing(classification, category, agency, region, places)

    def _category_vote_rtext(self, rtext: str) -> tuple[dict[str, float], _Best]:
        return _vote(self._category_rules, rtext)

    def _agency(self, rtext: str, cat_scores: dict[str, float],
                cat_best: dict[str, tuple[_Rule, str]]) -> Decision | None:
        """Explicit mentions of an agency plus the agencies of the matching categories."""
        scores, best = _vote(self._agency_rules, rtext)
        for cat_id, score in cat_scores.items():
            agency = self.categories[cat_id].agency
            scores[agency] = scores.get(agency, 0.0) + score
            rule, matched = cat_best[cat_id]
            if agency not in best or score > best[agency][0].weight:
                best[agency] = (_Rule(f"category:{rule.id}", agency, score, rule.pattern, None),
                                matched)
        value = _winner(scores)
        if value is None:
            return None
        rule, matched = best[value]
        return Decision(value, rule.id, matched, scores[value])

    def category_scores(self, text: str) -> dict[str, float]:
        """Every matching category with its score (the weights of its matching rules)."""
        return dict(self._category_vote(routing_text(text))[0])

    def region(self, text: str) -> Decision | None:
        """The region code of the places named in ``text``, or None."""
        return self.gazetteer.resolve(self.gazetteer.find(text))

    def places(self, text: str) -> list[Place]:
        """The gazetteer places named in ``text``."""
        return self.gazetteer.find(text)


def _display(path: Path | Traversable) -> str:
    """A file name for error messages: ``config/rules/x.toml`` for packaged files."""
    text = str(path)
    marker = "/config/"
    return "config/" + text.rsplit(marker, 1)[1] if marker in text else text


def _read_toml(path: Path | Traversable, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from exc


def _read_json(path: Path | Traversable, name: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the file: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}: not valid JSON: {exc}") from exc


def _load(model: type[_M], data: Any, name: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{name}: {_first_error(exc)}") from exc


@lru_cache(maxsize=1)
def default_router() -> Router:
    """The router built from the packaged files, built once per process."""
    return Router.from_files()
