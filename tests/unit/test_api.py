"""The partner API's request model and API-key authentication."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from pydantic import ValidationError

from config.settings import ApiSettings
from connectors.api import ApiConnector, PartnerComplaint
from normalizer.schema import Classification

KEYS = {"dinas-pu": "kunci-pu-0123456789", "aplikasi-samarinda": "kunci-smd-9876543210"}


# --- PartnerComplaint -------------------------------------------------------------------------


def test_minimal_body_parses_with_defaults() -> None:
    complaint = PartnerComplaint.model_validate_json(b'{"body": "Jalan rusak parah"}')
    assert complaint.body == "Jalan rusak parah"
    assert complaint.classification is Classification.PENGADUAN
    assert complaint.attachments == []
    assert complaint.anonymous is False


def test_full_body_parses() -> None:
    complaint = PartnerComplaint.model_validate({
        "external_id": "ext-1", "title": "Jalan", "body": "Jalan rusak parah",
        "incident_date": "2024-05-01", "location": {"text": "Jl. A", "lat": -0.5, "lon": 117.1},
        "classification": "aspirasi", "reporter": {"name": "Budi", "phone": "0812"},
        "attachments": [{"name": "a.png", "data_base64": "iVBORw=="}],
    })
    assert complaint.classification is Classification.ASPIRASI
    assert complaint.location is not None and complaint.location.lat == -0.5
    assert complaint.attachments[0].name == "a.png"


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"body": "x", "priority": "high"}, ("priority",)),
        ({"body": "x", "reporter": {"nik": "123"}}, ("reporter", "nik")),
        ({"body": "x", "location": {"text": "a", "alt": 3}}, ("location", "alt")),
        ({"body": "x", "attachments": [{"name": "a", "data_base64": "", "url": "u"}]},
         ("attachments", 0, "url")),
    ],
)
def test_unknown_fields_are_refused(payload: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        PartnerComplaint.model_validate(payload)
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [(loc, "extra_forbidden")]


def test_missing_body_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        PartnerComplaint.model_validate({"title": "Jalan rusak"})
    assert [e["loc"] for e in info.value.errors()] == [("body",)]


@pytest.mark.parametrize(
    "payload",
    [
        {"body": ""},
        {"body": "x" * 20001},
        {"body": "x", "external_id": ""},
        {"body": "x", "classification": "gosip"},
        {"body": "x", "location": {"lat": 91}},
        {"body": "x", "incident_date": "kemarin"},
    ],
)
def test_invalid_values_are_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PartnerComplaint.model_validate(payload)


# --- ApiConnector.authenticate ----------------------------------------------------------------


def _connector(keys: dict[str, str] | None = None) -> ApiConnector:
    return ApiConnector(ApiSettings(keys=KEYS if keys is None else keys), max_body_bytes=1024)


def _request(headers: dict[str, str]) -> Any:
    return make_mocked_request("POST", "/api/v1/complaints", headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer kunci-pu-0123456789"},
        {"Authorization": "bearer kunci-pu-0123456789"},
        {"Authorization": "BEARER   kunci-pu-0123456789  "},
        {"X-API-Key": "kunci-pu-0123456789"},
        {"x-api-key": "kunci-pu-0123456789"},
    ],
)
def test_valid_key_identifies_partner(headers: dict[str, str]) -> None:
    assert _connector().authenticate(_request(headers)) == "dinas-pu"


def test_each_key_maps_to_its_partner() -> None:
    connector = _connector()
    assert connector.authenticate(
        _request({"X-API-Key": "kunci-smd-9876543210"})) == "aplikasi-samarinda"
    assert connector.authenticate(
        _request({"Authorization": "Bearer kunci-smd-9876543210"})) == "aplikasi-samarinda"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer salah"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer kunci-pu-012345678"},  # prefix of a real key
        {"Authorization": "Bearer kunci-pu-01234567890"},  # a real key plus one character
        {"Authorization": "Basic a3VuY2ktcHUtMDEyMzQ1Njc4OQ=="},
        {"Authorization": "kunci-pu-0123456789"},  # no scheme
        {"X-API-Key": ""},
        {"X-API-Key": "salah"},
        {"X-Api-Token": "kunci-pu-0123456789"},
    ],
)
def test_wrong_or_missing_key_is_none(headers: dict[str, str]) -> None:
    assert _connector().authenticate(_request(headers)) is None


def test_no_configured_keys_refuses_everything() -> None:
    connector = _connector({})
    assert connector.authenticate(_request({})) is None
    assert connector.authenticate(_request({"Authorization": "Bearer "})) is None
    assert connector.authenticate(_request({"X-API-Key": "anything"})) is None
