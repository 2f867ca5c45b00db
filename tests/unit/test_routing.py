"""Routing: classification, category, agency and region, each explained by its rule; and
validation of the rule files operators edit."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from errors import ConfigError
from normalizer.routing import Decision, Router, default_router


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.from_files()


# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("Lampu jalan di Jl. Pahlawan mati sudah seminggu", "pengaduan"),
    ("jln rusak parah, kpn diperbaiki??", "pengaduan"),
    ("mau tanya syarat bikin akta kelahiran apa aja ya?", "permintaan_informasi"),
    ("Bagaimana cara mendaftar PPDB SMP negeri?", "permintaan_informasi"),
    ("Kami mengusulkan pembangunan taman bermain di kelurahan kami", "aspirasi"),
    ("sebaiknya ada bus sekolah gratis", "aspirasi"),
    ("Selamat pagi", "pengaduan"),  # the default
])
def test_classification(router: Router, text: str, expected: str) -> None:
    assert router.classify(text).value == expected


def test_default_classification_is_explained(router: Router) -> None:
    decision = router.classify("Selamat pagi")
    assert decision == Decision("pengaduan", "default", "", 0.5)


def test_a_complaint_phrased_as_a_question_stays_a_complaint(router: Router) -> None:
    decision = router.classify("Truk sampah kemana? Sampah sudah menumpuk 4 hari, bau busuk")
    assert decision.value == "pengaduan"
    assert decision.rule_id.startswith("pengaduan.")


# --- category and agency ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "category", "agency"), [
    ("PJU di jl juanda padam", "penerangan_jalan", "dinas_perhubungan"),
    ("jalan di lamaru bolong2 banyak bgt", "jalan_jembatan", "dinas_pupr"),
    ("air pdam ga ngalir 3 hari", "air_bersih", "perumda_air_minum"),
    ("sampah di TPS numpuk ga diangkut", "persampahan", "dlh"),
    ("KTP saya belum dicetak, blanko habis", "administrasi_kependudukan", "disdukcapil"),
    ("dimintai uang 150rb buat surat pengantar KK", "pungli_disiplin", "inspektorat"),
    ("parkir liar, jukir minta 5rb, pungli?", "parkir", "dinas_perhubungan"),
    ("pengemis anak di lampu merah tiap malam", "bantuan_sosial", "dinas_sosial"),
])
def test_category_and_agency(router: Router, text: str, category: str, agency: str) -> None:
    routing = router.route(text)
    assert routing.category is not None and routing.category.value == category
    assert routing.agency is not None and routing.agency.value == agency


def test_explicit_agency_mention_counts(router: Router) -> None:
    routing = router.route("@PDAMBalikpapan gimana ini?")
    assert routing.agency == Decision("perumda_air_minum", "sebut.pdam", "pdam", 6.0)


def test_agency_through_category_names_the_category_rule(router: Router) -> None:
    agency = router.route("lampu jalan mati").agency
    assert agency is not None
    assert agency.rule_id == "category:pju.lampu_jalan"
    assert agency.matched_text == "lampu jalan"


def test_nothing_matches(router: Router) -> None:
    routing = router.route("halo")
    assert routing.category is None and routing.agency is None and routing.region is None
    assert routing.rule_ids() == ["default"]


# --- region -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "code"), [
    ("lampu mati di Kel. Dadi Mulya", "64.72.03"),
    ("banjir di samarinda", "64.72"),
    ("air mati di Kel. Gunung Samarinda Balikpapan Utara", "64.71.03"),  # not Samarinda
    ("jalan rusak di Kecamatan Loa Janan Ilir", "64.72.10"),  # not Loa Janan (Kukar)
    ("jalan rusak di Loa Janan", "64.03.04"),
    ("Samarinda Seberang banjir", "64.72.02"),
    ("jalan poros di Sebulu Kukar", "64.03.10"),
    ("air ga ngalir di batu ampar bpp", "64.71.03"),  # ambiguous name, decided by "bpp"
    ("jembatan di Tanjung Redeb", "64.05.05"),
    ("Jalan poros Tenggarong - Kota Bangun di wilayah Kecamatan Sebulu", "64.03.10"),
    ("antrean di Simpang Lembuswana", "64.72"),
    ("beasiswa kaltim", "64"),
])
def test_region(router: Router, text: str, code: str) -> None:
    region = router.route(text).region
    assert region is not None and region.value == code


@pytest.mark.parametrize("text", [
    "air di batu ampar mati",  # Batu Ampar is in Balikpapan and in Kutai Timur
    "orang jawa dan bugis",  # ethnic groups, not Kel. Jawa / Kel. Bugis
    "kata sambutan pak camat",  # "sambutan" is a word, not only Kec. Sambutan
])
def test_no_region_when_unsure(router: Router, text: str) -> None:
    assert router.route(text).region is None


def test_prefixed_common_word_is_a_place(router: Router) -> None:
    region = router.route("TPS di Kel. Pelita penuh").region
    assert region == Decision("64.72.04", "gazetteer:village:Pelita", "pelita", 2.0)


def test_location_field_wins(router: Router) -> None:
    routing = router.route("jalan rusak di Samarinda", location="Kel. Manggar, Balikpapan")
    assert routing.region is not None and routing.region.value == "64.71.01"


def test_gazetteer_covers_all_ten_kabupaten_kota(router: Router) -> None:
    codes = router.gazetteer.codes()
    regencies = {c for c in codes if c.count(".") == 1}
    assert regencies == {"64.01", "64.02", "64.03", "64.04", "64.05", "64.09", "64.11",
                         "64.71", "64.72", "64.74"}
    districts = {c for c in codes if c.count(".") == 2}
    assert len(districts) >= 103
    assert router.gazetteer.name_of("64.72") == "Kota Samarinda"
    assert router.gazetteer.name_of("64.72.01") == "Palaran"


def test_default_router_is_built_once() -> None:
    assert default_router() is default_router()


# --- rule file validation -----------------------------------------------------------------------


def _copy_rules(tmp_path: Path) -> tuple[Path, Path, Path]:
    base = resources.files("config")
    paths = []
    for name in ("rules/classification.toml", "rules/agencies.toml", "gazetteer_kaltim.json"):
        target = tmp_path / name.split("/")[-1]
        target.write_text(base.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
        paths.append(target)
    return paths[0], paths[1], paths[2]


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_copied_files_load(tmp_path: Path) -> None:
    c, a, g = _copy_rules(tmp_path)
    assert Router.from_files(c, a, g).classify("usul dibangun taman").value == "aspirasi"


def test_bad_regex_names_file_and_rule(tmp_path: Path) -> None:
    c, a, g = _copy_rules(tmp_path)
    _append(c, '\n[[category_rules]]\nid = "rusak.regex"\nvalue = "parkir"\n'
               "patterns = ['(unclosed']\n")
    with pytest.raises(ConfigError, match=r"classification\.toml: rule 'rusak\.regex'.*regular"):
        Router.from_files(c, a, g)


def test_unknown_value_names_file_and_rule(tmp_path: Path) -> None:
    c, a, g = _copy_rules(tmp_path)
    _append(a, '\n[[agency_rules]]\nid = "sebut.entah"\nvalue = "dinas_entah"\n'
               "patterns = ['entah']\n")
    with pytest.raises(ConfigError, match=r"agencies\.toml: rule 'sebut\.entah': unknown agency"):
        Router.from_files(c, a, g)


def test_duplicate_rule_id_is_refused(tmp_path: Path) -> None:
    c, a, g = _copy_rules(tmp_path)
    _append(c, '\n[[category_rules]]\nid = "pju.lampu_jalan"\nvalue = "parkir"\n'
               "patterns = ['x']\n")
    with pytest.raises(ConfigError, match="duplicate rule id"):
        Router.from_files(c, a, g)


def test_unknown_key_and_missing_patterns_are_refused(tmp_path: Path) -> None:
    c, a, g = _copy_rules(tmp_path)
    _append(c, '\n[[category_rules]]\nid = "x.y"\nvalue = "parkir"\npattern = "typo"\n')
    with pytest.raises(ConfigError, match=r"rule 'x\.y'"):
        Router.from_files(c, a, g)


def test_category_with_unknown_agency(tmp_path: Path) -> None:
    c, a, g = _copy_rules(tmp_path)
    _append(c, '\n[categories.baru]\nname = "Baru"\nagency = "tidak_ada"\n')
    with pytest.raises(ConfigError, match="category 'baru': unknown agency 'tidak_ada'"):
        Router.from_files(c, a, g)


def test_broken_toml_and_json(tmp_path: Path) -> None:
    c, a, g = _copy_rules(tmp_path)
    _append(c, "\n[[oops\n")
    with pytest.raises(ConfigError, match="classification.toml: not valid TOML"):
        Router.from_files(c, a, g)
    c, a, g = _copy_rules(tmp_path)
    g.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="gazetteer_kaltim.json: not valid JSON"):
        Router.from_files(c, a, g)


def test_bad_gazetteer_code(tmp_path: Path) -> None:
    c, a, g = _copy_rules(tmp_path)
    data = json.loads(g.read_text(encoding="utf-8"))
    data["regencies"][0]["districts"][0]["code"] = "64.1.1"
    g.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="gazetteer_kaltim.json: regencies.0.districts.0.code"):
        Router.from_files(c, a, g)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Router.from_files(tmp_path / "nope.toml")


def test_match_starts_lists_what_a_match_can_begin_with() -> None:
    from normalizer.routing import _match_starts

    assert _match_starts([r"\b(pu|dinas (pu|pekerjaan))\b"]) == {"pu", "din"}
    assert _match_starts([r"\bpdam", r"\bperumdam?\b"]) == {"pda", "per"}
    assert _match_starts([r"\b[bp]anjir"]) == {"ban", "pan"}
    assert _match_starts([r"\b(ke ?mana)\b"]) == {"ke ", "kem"}
    # Beginnings that cannot be listed: no prefilter, the rule always runs.
    assert _match_starts([r"\bpdam", r"\w+ hari"]) is None
    assert _match_starts([r"\b\w+ (hari|minggu)\b"]) is None
    assert _match_starts([r"(?i)\bpdam"]) is None


def test_the_prefilter_never_changes_a_decision(router: Router) -> None:
    """Every labelled text routes the same with the prefilter and with every rule run."""
    import dataclasses

    data = Path(__file__).resolve().parent.parent / "data" / "complaints_eval.jsonl"
    texts = [json.loads(line)["text"] for line in data.read_text("utf-8").splitlines()
             if line.strip()]
    fast = [router.route(text) for text in texts]
    slow_router = Router.from_files()
    for rules in (slow_router._class_rules, slow_router._category_rules,
                  slow_router._agency_rules):
        assert any(rule.starts is not None for rule in rules)
        rules[:] = [dataclasses.replace(rule, starts=None) for rule in rules]
    assert [slow_router.route(text) for text in texts] == fast


def test_remembered_votes_are_not_shared_with_callers() -> None:
    router = default_router()
    text = "Jalan rusak parah di Jl. Juanda Samarinda, lubang besar membahayakan pengendara."
    scores = router.category_scores(text)
    assert scores
    scores.clear()  # a caller changing its copy changes nothing for the next complaint
    assert router.category_scores(text) and router.route(text).category is not None
