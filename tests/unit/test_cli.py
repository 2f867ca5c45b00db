"""The command line fails clearly on bad configuration, before touching any service."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main


def test_bad_config_value_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[gateway]\nport = "delapan-ribu"\n')
    assert main(["run", "--config", str(config)]) == 2
    assert "gateway.port" in capsys.readouterr().err


def test_unknown_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "typo.toml"
    config.write_text('[kafka]\nbootstrap_server = "k1:9092"\n')
    assert main(["gateway", "--config", str(config)]) == 2
    assert "kafka.bootstrap_server" in capsys.readouterr().err


def test_env_override_is_validated_too(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LAPOR_STORE__URL", "mysql://nope")
    assert main(["export"]) == 2
    assert "store.url" in capsys.readouterr().err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sink", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_unbuilt_connector_cannot_be_enabled(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "email.toml"
    config.write_text("[connectors.email]\nenabled = true\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "connectors.email" in capsys.readouterr().err


def test_enabled_connector_without_its_secrets_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "wa.toml"
    config.write_text("[connectors.whatsapp]\nenabled = true\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "connectors.whatsapp" in capsys.readouterr().err
