"""bloomr runs scripts and streams what they print, live and with exact replay.

Only the script-side helper is imported here, so `import bloomr` stays instant and
dependency-free inside the scripts bloomr runs."""

from .emit import emit

__all__ = ["emit"]
