"""One Settings object: command-line flags with environment-variable fallbacks."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .bounds import Bounds

DEFAULT_DATA_DIR = Path("./bloomr-data")
DEFAULT_MAX_BODY = 10 * 1024 * 1024
DEFAULT_CLUSTER_NAME = "bloomr"
# a cluster's name is its Redis key prefix and its PostgreSQL schema: a schema name
# that needs no quoting, and so also a plain key prefix
_CLUSTER_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_list(name: str) -> tuple[str, ...]:
    """A comma-separated environment variable, as its non-empty items."""
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


def check_cluster_name(name: str) -> str:
    """The name, or ValueError for one that cannot be a schema and key prefix."""
    if _CLUSTER_NAME.fullmatch(name) is None:
        raise ValueError(
            f"invalid cluster name {name!r}: use 1-63 of [a-z0-9_], not starting with a digit"
        )
    return name


def new_node_id() -> str:
    """This process's name among the cluster's nodes (lease owner, status writer)."""
    return "n_" + secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class JwtConfig:
    """Where the keys of application-minted JWTs come from (SPEC §7); none: no JWTs."""

    secret: str | None = field(default=None, repr=False)  # HS256: never logged or shown
    public_key: Path | None = None  # a PEM public key, a JWK or a JWKS: RS256, ES256, EdDSA
    jwks_url: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.public_key or self.jwks_url)


@dataclass(slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = DEFAULT_DATA_DIR
    admin_key: str | None = None  # None: BLOOMR_ADMIN_KEY, else <data-dir>/admin.key
    max_body_bytes: int = field(
        default_factory=lambda: _env_int("BLOOMR_MAX_BODY", DEFAULT_MAX_BODY)
    )
    backlog_messages: int = field(
        default_factory=lambda: _env_int("BLOOMR_BACKLOG_MESSAGES", 10_000)
    )
    backlog_bytes: int = field(
        default_factory=lambda: _env_int("BLOOMR_BACKLOG_BYTES", 16 * 1024 * 1024)
    )
    bounds: Bounds = field(default_factory=Bounds.from_env)  # see bounds.py
    trim_interval: float = field(default_factory=lambda: _env_float("BLOOMR_TRIM_INTERVAL", 30.0))
    script_grace: float = field(default_factory=lambda: _env_float("BLOOMR_SCRIPT_GRACE", 5.0))
    cors_origins: str = "*"  # Socket.IO's Engine.IO polling: any origin
    # the admin API's CORS origins (`*` for any); the client endpoints answer any origin
    admin_cors_origins: tuple[str, ...] = field(
        default_factory=lambda: _env_list("BLOOMR_CORS_ORIGINS")
    )
    # webhooks may call loopback, private and link-local addresses (tests, private nets)
    webhook_allow_private: bool = field(
        default_factory=lambda: _env_bool("BLOOMR_WEBHOOK_ALLOW_PRIVATE")
    )

    jwt: JwtConfig = field(default_factory=JwtConfig)

    # cluster mode: both URLs, or neither (embedded)
    redis_url: str | None = None
    database_url: str | None = None
    cluster_name: str = DEFAULT_CLUSTER_NAME
    lease_ttl: float = field(default_factory=lambda: _env_float("BLOOMR_LEASE_TTL", 10.0))
    node_id: str = field(default_factory=new_node_id)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "bloomr.db"

    @property
    def cluster(self) -> bool:
        return self.redis_url is not None and self.database_url is not None


@dataclass(frozen=True, slots=True)
class AdminKey:
    value: str
    generated: bool  # True only on the run that created it: the one time it is printed


def explicit_admin_key(settings: Settings) -> str | None:
    """The flag, else BLOOMR_ADMIN_KEY."""
    return settings.admin_key or os.environ.get("BLOOMR_ADMIN_KEY") or None


def new_admin_key() -> str:
    return "bk_" + secrets.token_urlsafe(32)


def load_admin_key(settings: Settings) -> AdminKey:
    """The flag, else BLOOMR_ADMIN_KEY, else <data-dir>/admin.key (created 0600 once)."""
    explicit = explicit_admin_key(settings)
    if explicit:
        return AdminKey(explicit, generated=False)
    path = settings.data_dir / "admin.key"
    if path.exists():
        return AdminKey(path.read_text().strip(), generated=False)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = new_admin_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return AdminKey(key, generated=True)
