"""Fulfilment routing rules and the routing function (to be built: issue 5)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FulfilmentRouting(BaseModel):
    """The ``[fulfilment]`` section of the rules file (placeholder until issue 5 lands)."""

    model_config = ConfigDict(extra="allow")
