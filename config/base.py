"""What every settings section shares; imported by the settings tree and the channel modules."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MiB = 1024 * 1024


class Section(BaseModel):
    """A config section: unknown keys are errors, so typos fail at start-up."""

    model_config = ConfigDict(extra="forbid")


class ConnectorSettings(Section):
    """Fields every ``[connectors.<name>]`` section has."""

    enabled: bool = Field(False, description="Run this connector.")
