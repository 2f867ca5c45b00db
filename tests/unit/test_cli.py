"""The command line fails clearly on bad configuration, before touching any service."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from gateway.cli import freeze_startup_objects, main


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


@pytest.mark.parametrize("argv", [["status"], ["dlq", "list"], ["dlq", "replay", "abc"]])
def test_ops_commands_need_the_ops_token(argv: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "gateway.ops_token" in capsys.readouterr().err


def test_report_refuses_an_unknown_grouping(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["report", "--year", "2026", "--by", "kecamatan"])
    assert exited.value.code == 2
    assert "--by" in capsys.readouterr().err


def test_bad_alert_webhook_is_refused(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LAPOR_OPS__ALERT_WEBHOOK_URL", "ftp://chat.example/hook")
    assert main(["run"]) == 2
    assert "ops.alert_webhook_url" in capsys.readouterr().err


def test_startup_objects_leave_the_collectors_sight() -> None:
    """What startup built is frozen: full collections no longer walk it (the webhook p99)."""
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
