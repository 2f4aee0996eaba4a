"""The measurement protocol of the paper experiments by default: the latency tables' protocol for whole networks
(:data:`nas.latency.table.NETWORK_SETTINGS`); every benchmark net here is a whole network of 1-50 ms, like
the tables' calibration networks."""

from __future__ import annotations

from typing import Any

__all__ = ["default_settings"]


def default_settings(settings: Any = None) -> Any:
    """``settings`` if given, else the latency tables' network protocol (a :class:`nas.backends.MeasureSettings`)."""
    from nas.latency.table import NETWORK_SETTINGS

    return settings if settings is not None else NETWORK_SETTINGS
