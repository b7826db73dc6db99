"""Brokers: the ordered, atomic append-and-fan-out of a stream's messages, plus its
reads (`base.Broker`). One module per implementation, picked by name from
`BROKERS` (as uvicorn picks its protocols), so that no part of bloomr tests which
class it was given: what differs is declared in `Capabilities`."""

from __future__ import annotations

import importlib
from typing import Any, Literal

from .base import Broker, BrokerHandler, Capabilities

__all__ = ["BROKERS", "Broker", "BrokerHandler", "BrokerName", "Capabilities", "broker_class"]

BrokerName = Literal["sqlite", "redis"]
BROKERS: dict[BrokerName, str] = {
    "sqlite": "bloomr.broker.embedded:EmbeddedBroker",  # one node: SQLite history
    "redis": "bloomr.broker.redis:RedisBroker",  # a cluster: history and fan-out in Redis
}


def import_from_string(path: str) -> Any:
    """`"package.module:attribute"` -> the attribute, importing the module."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def broker_class(name: BrokerName) -> Any:
    """The broker class of that name (its module is imported only now: the Redis one
    needs the cluster extra)."""
    return import_from_string(BROKERS[name])
