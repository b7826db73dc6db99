"""Webhooks: every message of a channel POSTed, signed, to a URL; at-least-once and in
order per webhook, retried with backoff, surviving restarts.

`model` (nouns and delivery state), `signing` and `policy` (pure), `guard` (which URLs
may be called), `worker` (one delivery task per webhook) and `manager` (wires them to
the hub and the store). This module imports nothing, so the store can import the model
without importing the hub."""
