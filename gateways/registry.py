"""Gateway discovery through the ``smsgw.gateways`` entry-point group.

Built-in adapters are declared in smsgw's own ``pyproject.toml`` and load through the same
path as third-party plugins. Classes load lazily, only when asked for. Two distributions
registering one name is an error (never a silent override); an unknown name gets a
"did you mean". ``enabled`` (from ``SMSGW_GATEWAYS_ENABLED``) limits what may load.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from gateways.base import SmsGateway
from gateways.errors import ConfigurationError, UnknownGateway

__all__ = ["ENTRY_POINT_GROUP", "GatewayEntry", "discover", "gateway_names", "load_gateway"]

ENTRY_POINT_GROUP = "smsgw.gateways"


@dataclass(frozen=True, slots=True)
class GatewayEntry:
    """One registered gateway name and where it comes from."""

    name: str
    target: str  # "module:Class"
    distribution: str | None

    def load(self) -> type[SmsGateway]:
        """Import the class and check it is a proper gateway registered under its own name."""
        try:
            obj = EntryPoint(self.name, self.target, ENTRY_POINT_GROUP).load()
        except (ImportError, AttributeError) as error:
            raise ConfigurationError(
                f"gateway {self.name!r} ({self.target}) cannot be imported: {error}"
            ) from error
        if not (isinstance(obj, type) and issubclass(obj, SmsGateway)):
            raise ConfigurationError(
                f"gateway {self.name!r} ({self.target}) is not a subclass of SmsGateway"
            )
        meta = getattr(obj, "metadata", None)
        if meta is None:
            raise ConfigurationError(f"gateway {self.name!r} ({self.target}) has no metadata")
        if self.name != meta.name and self.name not in meta.aliases:
            raise ConfigurationError(
                f"gateway {self.name!r} ({self.target}) calls itself {meta.name!r}; "
                f"register it under that name or add {self.name!r} to its aliases"
            )
        return obj


def discover() -> dict[str, GatewayEntry]:
    """Every registered gateway name, without importing any adapter.

    Raises:
        ConfigurationError: Two different classes are registered under one name.
    """
    found: dict[str, GatewayEntry] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        dist = point.dist.name if point.dist is not None else None
        entry = GatewayEntry(point.name, point.value, dist)
        existing = found.get(point.name)
        if existing is not None and existing.target != entry.target:
            raise ConfigurationError(
                f"gateway name {point.name!r} is registered twice: {existing.target} "
                f"(from {existing.distribution}) and {entry.target} (from {entry.distribution}); "
                f"uninstall one or rename it"
            )
        found[point.name] = entry
    return found


def gateway_names(enabled: Collection[str] | None = None) -> list[str]:
    """Registered names, sorted, limited to ``enabled`` when given."""
    names = sorted(discover())
    return [name for name in names if enabled is None or name in enabled]


def load_gateway(name: str, enabled: Collection[str] | None = None) -> type[SmsGateway]:
    """The adapter class registered under ``name``.

    Args:
        name: A gateway name or alias (``vonage``, ``nexmo``, a plugin's name).
        enabled: When given, only these names may load.

    Raises:
        UnknownGateway: No such name (the message suggests the closest one), or it is not
            enabled.
        ConfigurationError: The registration is broken (see :meth:`GatewayEntry.load`).
    """
    registered = discover()
    allowed = [n for n in registered if enabled is None or n in enabled]
    if name not in allowed:
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5)
        if name in registered:
            raise UnknownGateway(name, None, reason="is installed but not enabled")
        raise UnknownGateway(name, close[0] if close else None)
    return registered[name].load()
