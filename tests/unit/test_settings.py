"""The settings tree: TOML file, environment overrides, and clear errors naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from config.settings import KafkaSettings, Settings, load_settings
from errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"

TOML = """
[gateway]
host = "0.0.0.0"
port = 8081
data_dir = "{data_dir}"

[kafka]
bootstrap_servers = "file-kafka:9092"
partitions = 3

[store]
pool_size = 4

[connectors.webform]
max_files = 2

[connectors.telegram]
enabled = false
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "lapor.toml"
    path.write_text(TOML.format(data_dir=(tmp_path / "state").as_posix()))
    return path


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_example_file_loads() -> None:
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE} does not exist yet")
    with open(EXAMPLE, "rb") as fh:
        raw = tomllib.load(fh)
    settings = load_settings(EXAMPLE)
    assert settings.gateway.port == raw["gateway"]["port"]
    assert settings.gateway.host == raw["gateway"]["host"]
    assert settings.kafka.bootstrap_servers == raw["kafka"]["bootstrap_servers"]
    for name, section in raw.get("connectors", {}).items():
        assert getattr(settings.connectors, name).enabled == section["enabled"]


def test_load_file(config_file: Path, tmp_path: Path) -> None:
    settings = load_settings(config_file)
    assert settings.gateway.host == "0.0.0.0"
    assert settings.gateway.port == 8081
    assert settings.gateway.data_dir == tmp_path / "state"
    assert settings.kafka.bootstrap_servers == "file-kafka:9092"
    assert settings.kafka.partitions == 3
    assert settings.store.pool_size == 4
    assert settings.connectors.webform.max_files == 2
    assert settings.connectors.telegram.enabled is False
    # Keys absent from the file keep their defaults.
    assert settings.kafka.sink_group == "lapor-sink"
    assert settings.connectors.api.enabled is True


def test_no_file_gives_defaults() -> None:
    settings = load_settings()
    assert settings.gateway.port == 8080
    assert settings.kafka.bootstrap_servers == "embedded"
    assert settings.store.url is None


def test_env_beats_file(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPOR_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("LAPOR_GATEWAY__PORT", "9999")
    settings = load_settings(config_file)
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.gateway.port == 9999
    # Only the overridden keys change: the rest of each section still comes from the file.
    assert settings.gateway.host == "0.0.0.0"
    assert settings.kafka.partitions == 3


def test_env_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("lapor_gateway__port", "7000")
    assert load_settings().gateway.port == 7000


def test_env_secret_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPOR_CONNECTORS__API__KEYS", '{"dinas-pu": "rahasia"}')
    keys = load_settings().connectors.api.keys
    assert keys["dinas-pu"].get_secret_value() == "rahasia"
    assert "rahasia" not in repr(keys)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[gateway]\nprot = 8080\n", "gateway.prot"),
        ("[kafka]\nbootstrap_server = \"k1:9092\"\n", "kafka.bootstrap_server"),
        ("[connectors.webform]\nmax_file = 3\n", "connectors.webform.max_file"),
        ("[gatway]\nport = 1\n", "gatway"),
    ],
)
def test_unknown_key_is_refused_naming_it(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[gateway]\nport = \"delapan-ribu\"\n", "gateway.port"),
        ("[gateway]\nport = 70000\n", "gateway.port"),
        ("[gateway]\nmax_body_bytes = 0\n", "gateway.max_body_bytes"),
        ("[kafka]\npartitions = 0\n", "kafka.partitions"),
        ("[connectors.webform]\nmax_files = 99\n", "connectors.webform.max_files"),
    ],
)
def test_bad_value_is_refused_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    assert key in str(info.value)


def test_bad_env_value_is_refused_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPOR_GATEWAY__PORT", "bukan-angka")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "gateway.port" in str(info.value)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_invalid_toml_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_write(tmp_path, "[gateway\nport = \n"))


@pytest.mark.parametrize("url", ["mysql://db/lapor", "sqlite://relative.db", "lapor.db",
                                 "http://db"])
def test_bad_store_url_scheme_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, f'[store]\nurl = "{url}"\n'))
    assert "store.url" in str(info.value)


def test_bad_store_url_from_env_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPOR_STORE__URL", "mysql://nope")
    with pytest.raises(ConfigError, match="store.url"):
        load_settings()


@pytest.mark.parametrize(
    "url", ["sqlite:////var/lib/lapor.db", "postgresql://lapor@db/lapor", "postgres://db/x"]
)
def test_good_store_url_is_used(tmp_path: Path, url: str) -> None:
    settings = load_settings(_write(tmp_path, f'[store]\nurl = "{url}"\n'))
    assert settings.store_url() == url


@pytest.mark.parametrize("name", ["telegram", "whatsapp", "meta", "email", "x", "sms"])
def test_unbuilt_connector_cannot_be_enabled(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, f"[connectors.{name}]\nenabled = true\n"))
    assert f"connectors.{name}" in str(info.value)


def test_unbuilt_connector_cannot_be_enabled_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPOR_CONNECTORS__TELEGRAM__ENABLED", "true")
    with pytest.raises(ConfigError, match="connectors.telegram"):
        load_settings()


def test_kafka_idempotence_defaults() -> None:
    assert KafkaSettings().idempotence() is False
    assert KafkaSettings(bootstrap_servers="k1:9092").idempotence() is True
    assert KafkaSettings(enable_idempotence=True).idempotence() is True
    assert KafkaSettings(bootstrap_servers="k1:9092",
                         enable_idempotence=False).idempotence() is False


def test_store_url_default_is_under_data_dir(tmp_path: Path) -> None:
    settings = load_settings(gateway={"data_dir": str(tmp_path)})
    assert settings.store_url() == f"sqlite:///{(tmp_path / 'lapor.db').as_posix()}"
    assert Settings().store_url() == "sqlite:///data/lapor.db"
