"""Settings, example configs and data files of lapor-gateway."""

from config.settings import (
    ApiSettings,
    ConnectorsSettings,
    GatewaySettings,
    KafkaSettings,
    Settings,
    StoreSettings,
    WebformSettings,
    load_settings,
)

__all__ = [
    "ApiSettings",
    "ConnectorsSettings",
    "GatewaySettings",
    "KafkaSettings",
    "Settings",
    "StoreSettings",
    "WebformSettings",
    "load_settings",
]
