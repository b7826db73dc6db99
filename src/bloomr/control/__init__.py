"""Control events: small notices that shared state changed (a token revoked, a stream
updated or deleted, a script asked to start or reported its state, webhooks changed),
sent to every node. The stores hold the state; an event only says where to look again.

`ControlChannel` is the transport between nodes (one module per implementation: `local`
for one process, `redis` for a cluster); `Control` is this node's end of it, which hands
every event it hears to the parts that watch for it."""

from .base import Control, ControlChannel, ControlEvent, ControlHandler, ControlKind

__all__ = ["Control", "ControlChannel", "ControlEvent", "ControlHandler", "ControlKind"]
