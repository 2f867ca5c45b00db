"""The settings tree: one TOML file, every key overridable by ``LAPOR_<SECTION>__<KEY>``.

Loaded once by the entry point (:func:`load_settings`) and passed down; each component receives
only its own sub-model. This is the only module that reads ``os.environ`` (through
pydantic-settings). Precedence, highest first: environment, TOML file, defaults.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.base import ConnectorSettings as ConnectorSettings  # re-export for channel modules
from config.base import MiB, Section
from config.email import EmailSettings
from config.lifecycle import LifecycleSettings
from config.sms import SmsSettings
from config.telegram import TelegramSettings
from config.whatsapp import MetaSettings, WhatsAppSettings
from config.x import XSettings
from errors import ConfigError


class GatewaySettings(Section):
    """``[gateway]``: the HTTP server and where state lives."""

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0 picks a free port).")
    data_dir: Path = Field(Path("data"), description="Directory for SQLite files and attachments.")
    public_url: str | None = Field(
        None, description="Public base URL (for webhooks and links sent to citizens)."
    )
    ops_token: SecretStr | None = Field(None, description="Bearer token for /ops and /ops/api.")
    secret_key: SecretStr | None = Field(
        None,
        description="Key for CSRF tokens; generated once and kept in data_dir when unset.",
    )
    max_body_bytes: int = Field(
        30 * MiB, gt=0, description="Largest request body accepted (larger is HTTP 413)."
    )
    intake_worker: bool = Field(
        True, description="Normalise and fingerprint complaints in a child process, on another "
        "core than the event loop; it starts at the first complaint and stops after "
        "intake_worker_idle_s without one. Off: in process (the better choice on one core).")
    intake_worker_idle_s: float = Field(
        300.0, gt=0, description="Seconds without a complaint after which the intake worker "
        "process stops (it starts again at the next one).")
    heap_trim_s: float = Field(
        60.0, ge=0, description="Seconds between handing the C heap's free pages back to the "
        "system (glibc malloc_trim; under steady load the heap fragments and keeps them "
        "resident); 0 never.")
    repeat_window_s: float = Field(
        86400.0, ge=0,
        description="The same sender sending the same text again within this many seconds is "
        "the earlier complaint (a duplicate event), not a new one; 0 turns it off.",
    )
    max_attachment_bytes: int = Field(
        25 * MiB, gt=0,
        description="Largest attachment stored from any channel (each channel may set less).",
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="Seconds to let in-flight work finish on SIGTERM."
    )
    instance_id: str | None = Field(
        None, description="Name of this instance in logs and CloudEvents (default: hostname-pid)."
    )
    outbox_max_pending: int = Field(
        100_000, ge=1,
        description="Back-pressure: with more undelivered outbox entries than this (Kafka "
        "unreachable for long), intake answers 503 with Retry-After and channels redeliver.",
    )
    retry_after_s: int = Field(
        5, ge=1, le=3600, description="Retry-After sent with a 503 (store or outbox full)."
    )
    rate_limit_per_ip: float = Field(
        60.0, ge=0,
        description="Web form submissions per minute from one client address "
        "(0 turns the limit off); over it: 429 with Retry-After.",
    )
    rate_limit_api_per_ip: float = Field(
        1200.0, ge=0,
        description="Partner API submissions per minute from one address (0 = off).",
    )
    rate_limit_webhook_per_ip: float = Field(
        6000.0, ge=0,
        description="Webhook deliveries per minute from one address: generous, since Meta and "
        "Telegram deliver from a few addresses (0 = off).",
    )
    rate_limit_lookup_per_ip: float = Field(
        120.0, ge=0,
        description="Status look-ups per minute from one address: slows guessing tracking "
        "codes (0 = off).",
    )
    rate_limit_per_partner: float = Field(
        600.0, ge=0, description="API submissions per minute from one partner key (0 = off)."
    )
    rate_limit_burst_s: float = Field(
        10.0, gt=0,
        description="Seconds of the per-minute rate a client may spend at once (the bucket).",
    )
    rate_limit_max_clients: int = Field(
        100_000, ge=100,
        description="Clients remembered by each limiter (least recently seen forgotten first): "
        "bounds the memory a flood of addresses can take.",
    )
    trust_forwarded_for: bool = Field(
        False,
        description="Take the client address from the last X-Forwarded-For hop (only behind "
        "a proxy that sets it; otherwise clients could choose their own address).",
    )


class KafkaSettings(Section):
    """``[kafka]``: the broker and the forwarding loop."""

    bootstrap_servers: str = Field(
        "embedded",
        description='"embedded" starts a local Kafka-API broker child; else host:port,...',
    )
    enable_idempotence: bool | None = Field(
        None,
        description="Idempotent producer. Default: off for the embedded broker (it lacks it), "
        "on otherwise. End-to-end correctness never depends on it.",
    )
    topic_prefix: str = Field("", description="Prefix added to every topic name.")
    partitions: int = Field(6, ge=1, description="Partitions for topics the gateway creates.")
    embedded_port: int = Field(0, ge=0, le=65535, description="Embedded broker port (0 = free).")
    request_timeout_ms: int = Field(15000, gt=0, description="Producer request timeout.")
    receipt_timeout_s: float = Field(
        30.0, gt=0, description="Republish an outbox entry with no receipt after this long."
    )
    publish_batch: int = Field(500, ge=1, description="Outbox entries published per round.")
    sink_group: str = Field("lapor-sink", description="Consumer group of the sink.")
    receipts_group: str = Field(
        "lapor-gateway-receipts", description="Consumer group of the gateway's receipt reader."
    )

    def idempotence(self) -> bool:
        """The effective idempotence setting."""
        if self.enable_idempotence is not None:
            return self.enable_idempotence
        return self.bootstrap_servers != "embedded"


class StoreSettings(Section):
    """``[store]``: the durable outbox and central store (one database)."""

    url: str | None = Field(
        None,
        description="sqlite:///path.db or postgresql://user@host/db; "
        "default sqlite:///<data_dir>/lapor.db",
    )
    pool_size: int = Field(
        10, ge=2, description="PostgreSQL connection pool size (migrations need two)."
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:///, postgresql:// or postgres://")
        return url


class DedupSettings(Section):
    """``[dedup]``: near-duplicate detection across channels and reporters."""

    enabled: bool = Field(
        True, description="Label near duplicates (duplicate_of, cluster_id); they are always "
        "forwarded, never dropped.")
    window_days: float = Field(
        30.0, gt=0, description="Only complaints received within this many days are compared.")
    candidates_per_key: int = Field(
        10, ge=1, description="Newest index rows read for each LSH/block key of a lookup.")
    max_candidates: int = Field(
        100, ge=1, description="Most stored complaints compared with one new complaint.")


class WebformSettings(ConnectorSettings):
    """``[connectors.webform]``: the citizen complaint form at ``/``."""

    enabled: bool = True
    account: str = Field("web", description="Account name recorded for form submissions.")
    max_files: int = Field(5, ge=0, le=20, description="Attachments per submission.")
    max_file_bytes: int = Field(10 * MiB, gt=0, description="Largest single attachment.")


class ApiSettings(ConnectorSettings):
    """``[connectors.api]``: the partner JSON API at ``/api/v1/complaints``."""

    enabled: bool = True
    keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Partner name -> API key (sent as 'Authorization: Bearer <key>' "
        "or 'X-API-Key'). No keys: every POST is refused with 401.",
    )
    max_attachments: int = Field(5, ge=0, le=20)
    agency_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Agency (instansi, as in the complaint's agency field) -> API key for "
        "POST /api/v1/complaints/{code}/status; an agency updates only complaints routed to it.",
    )


class OpsSettings(Section):
    """``[ops]``: the operators' dashboard, alerts and their thresholds."""

    alert_interval_s: float = Field(15.0, gt=0, description="Seconds between alert checks.")
    alert_webhook_url: str | None = Field(
        None, description="Also POST every raised/resolved alert as JSON to this URL."
    )
    outbox_age_alert_s: float = Field(
        300.0, gt=0, description="Alert when the oldest undelivered complaint is older."
    )
    silent_percentile: float = Field(
        95.0, gt=0, le=100, description="Percentile of a channel's own gaps that is normal."
    )
    silent_factor: float = Field(
        3.0, ge=1, description="A channel is silent after its usual gap times this factor."
    )
    silent_min_gap_s: float = Field(
        900.0, ge=0, description="Never call a channel silent before this many seconds."
    )
    silent_min_history: int = Field(
        20, ge=2, description="Messages a channel needs before silence is judged."
    )
    silent_history: int = Field(
        200, ge=3, description="Recent messages per channel the usual gap is learned from."
    )
    dead_letter_window_s: float = Field(
        3600.0, gt=0, description="Window over which new dead letters raise an alert."
    )
    dead_letter_growth: int = Field(
        1, ge=1, description="New dead letters within the window that raise the alert."
    )
    sample_interval_s: float = Field(
        60.0, gt=0, description="Throughput sampling period for the dashboard's charts."
    )

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class ConnectorsSettings(Section):
    """``[connectors.<name>]`` for every channel."""

    webform: WebformSettings = WebformSettings()
    api: ApiSettings = ApiSettings()
    whatsapp: WhatsAppSettings = WhatsAppSettings()
    meta: MetaSettings = MetaSettings()
    telegram: TelegramSettings = TelegramSettings()
    email: EmailSettings = EmailSettings()
    x: XSettings = XSettings()
    sms: SmsSettings = SmsSettings()


class Settings(BaseSettings):
    """The whole settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="LAPOR_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    gateway: GatewaySettings = GatewaySettings()
    kafka: KafkaSettings = KafkaSettings()
    store: StoreSettings = StoreSettings()
    dedup: DedupSettings = DedupSettings()
    ops: OpsSettings = OpsSettings()
    connectors: ConnectorsSettings = ConnectorsSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment overrides it.
        return env_settings, init_settings, file_secret_settings

    def store_url(self) -> str:
        """The effective store URL (default: a SQLite file under data_dir)."""
        if self.store.url:
            return self.store.url
        return f"sqlite:///{(self.gateway.data_dir / 'lapor.db').as_posix()}"


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"{key}: {item['msg']}")
    return "; ".join(lines)


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Load the settings once: the TOML file at ``path`` (optional), then the environment.

    Raises :class:`ConfigError` naming the offending key(s) on any problem.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_describe(exc)}") from exc
