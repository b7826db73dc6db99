"""Webhooks: every message of a channel POSTed, signed, to a URL; at-least-once and in
order per webhook, retried with backoff, surviving restarts.

`signing` and `policy` (pure), `guard` (which URLs may be called), `worker` (one
delivery task per webhook) and `manager` (wires them to the hub and the store). The
nouns and the delivery state are in `bloomr.webhook_model`, below the stores."""
