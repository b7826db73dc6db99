"""What the client commands share: where bloomr is, who is asking, one HTTP call, output,
and errors as one line.

Every option falls back to an environment variable (`BLOOMR_URL`, `BLOOMR_ADMIN_KEY`,
`BLOOMR_TOKEN`); without an admin key, `<data dir>/admin.key` is read, the data dir
being `BLOOMR_DATA_DIR` or `./bloomr-data`, as `bloomr serve` writes it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..config import DEFAULT_DATA_DIR

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT = 30.0

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """Ends a command with `error: <message>` on stderr and `exit_code` (1 unless said):
    `bloomr.cli.main` shows it, so no traceback is ever printed for it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def show(self) -> None:
        click.echo(f"error: {self.message}", err=True)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


# -- options -------------------------------------------------------------------------


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


url_option = click.option(
    "--url",
    envvar="BLOOMR_URL",
    default=DEFAULT_URL,
    show_default=True,
    show_envvar=True,
    help="Where bloomr listens.",
)
admin_key_option = click.option(
    "--admin-key",
    envvar="BLOOMR_ADMIN_KEY",
    show_envvar=True,
    help="The admin key [default: $BLOOMR_DATA_DIR/admin.key or ./bloomr-data/admin.key].",
)
token_option = click.option(
    "--token",
    envvar="BLOOMR_TOKEN",
    show_envvar=True,
    help="A client token (used instead of the admin key when given).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the API's JSON instead of text."
)

admin_options = _stack(url_option, admin_key_option, json_option)
"""--url, --admin-key, --json: for commands that manage streams and tokens."""

client_options = _stack(url_option, token_option, admin_key_option)
"""--url, --token, --admin-key: for commands a token holder may run."""


# -- credentials ---------------------------------------------------------------------


def data_dir_default() -> Path:
    return Path(os.environ.get("BLOOMR_DATA_DIR") or DEFAULT_DATA_DIR)


def read_admin_key(data_dir: Path) -> str | None:
    """The key `bloomr serve` wrote to `<data_dir>/admin.key`, or None if there is none."""
    path = data_dir / "admin.key"
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    return key or None


def admin_key(flag: str | None) -> str:
    """--admin-key / BLOOMR_ADMIN_KEY, else the key file; an error line if none."""
    key = flag or read_admin_key(data_dir_default())
    if not key:
        path = data_dir_default() / "admin.key"
        raise CliError(
            f"no admin key: pass --admin-key, set BLOOMR_ADMIN_KEY, or run where {path} exists"
        )
    return key


def client_secret(token: str | None, key: str | None) -> str:
    """--token / BLOOMR_TOKEN, else the admin key (the server takes it as a token)."""
    if token:
        return token
    secret = key or read_admin_key(data_dir_default())
    if not secret:
        raise CliError("no credentials: pass --token (or set BLOOMR_TOKEN) or an admin key")
    return secret


# -- HTTP ------------------------------------------------------------------------------


def failure_reason(exc: BaseException) -> str:
    """`connection refused` rather than `[Errno 111] Connection refused`."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno and seen.errno > 0:
            return os.strerror(seen.errno).lower()
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip()
    if text.startswith("[Errno"):
        text = text.split("]", 1)[-1].strip()
    return text.lower() if text else type(exc).__name__


def unreachable(url: str, exc: BaseException) -> CliError:
    return CliError(f"cannot reach bloomr at {url}: {failure_reason(exc)}")


def error_line(status: int, body: bytes) -> str:
    """`not_found: stream X not found` from the API's `{"error": {"code", "message"}}`."""
    try:
        error = json.loads(body)["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip().splitlines()
        return f"HTTP {status}" + (f": {text[0][:200]}" if text else "")


def tls_verify(url: str) -> bool:
    """Certificates are checked for https. A plain http URL never uses TLS (redirects are
    not followed), so its client skips building the TLS context, ~100 ms per command."""
    return url.lower().startswith("https:")


class Api:
    """One bloomr server, one credential: `call()` returns the JSON or raises CliError."""

    def __init__(self, url: str, secret: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=TIMEOUT,
            verify=tls_verify(self.url),
        )

    def call(
        self, method: str, path: str, body: Any = None, *, content: bytes | None = None
    ) -> Any:
        response = self._send(method, path, body, content)
        if response.status_code >= 400:
            raise CliError(error_line(response.status_code, response.content))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"bloomr at {self.url} answered with something other than JSON"
            ) from None

    def _send(self, method: str, path: str, body: Any, content: bytes | None) -> httpx.Response:
        import httpx

        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            if content is not None:
                return self._client.request(method, path, content=content, headers=headers)
            return self._client.request(method, path, json=body)
        except httpx.TimeoutException:
            raise CliError(f"bloomr at {self.url} did not answer within {TIMEOUT:g}s") from None
        except httpx.UnsupportedProtocol:
            raise CliError(f"invalid URL {self.url!r}: use http:// or https://") from None
        except httpx.InvalidURL as exc:
            raise CliError(f"invalid URL {self.url!r}: {exc}") from None
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from None

    def close(self) -> None:
        self._client.close()


def admin_api(url: str, key: str | None) -> Api:
    return Api(url, admin_key(key))


def api_path(*segments: str) -> str:
    """`/api/` and the segments, each quoted whole: an id `a/b` must not reach another
    route."""
    from urllib.parse import quote

    return "/api/" + "/".join(quote(segment, safe="") for segment in segments)


def list_items(
    url: str,
    key: str | None,
    path: str,
    as_json: bool,
    name: str,
    headers: Sequence[str],
    row: Callable[[dict[str, Any]], list[str]],
) -> None:
    """An admin GET of a collection (`{"<name>": [...]}`): with --json the API's
    document, else a table of `row(item)`, or `no <name>`."""
    doc = admin_api(url, key).call("GET", path)
    if as_json:
        print_json(doc)
        return
    print_table(headers, [row(item) for item in doc[name]], empty=f"no {name}")


def delete(
    url: str, key: str | None, path: str, as_json: bool, noun: str, ident: str, done: str
) -> None:
    """An admin DELETE, said as `<done> <noun> <ident>` (`deleted stream X`), or with
    --json as `{"id": "<ident>", "<done>": true}`."""
    admin_api(url, key).call("DELETE", path)
    if as_json:
        print_json({"id": ident, done: True})
    else:
        click.echo(f"{done} {noun} {ident}")


def add_delete_command(
    group: click.Group, name: str, collection: str, noun: str, done: str, doc: str
) -> None:
    """`bloomr <group> <name> ID`: `delete` of `/api/<collection>/ID`."""

    @group.command(name, help=doc)
    @click.argument("ident", metavar="ID")
    @admin_options
    def command(ident: str, url: str, admin_key: str | None, as_json: bool) -> None:
        delete(url, admin_key, api_path(collection, ident), as_json, noun, ident, done)


# -- output ----------------------------------------------------------------------------


def print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> Iterator[str]:
    """Plain aligned columns, two spaces apart; the last column is not padded."""
    columns = zip(headers, *rows, strict=False)
    widths = [max(len(str(cell)) for cell in column) for column in columns]
    for row in (headers, *rows):
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        yield "  ".join([*cells, str(row[-1])]).rstrip()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    if not rows:
        click.echo(empty)
        return
    for line in table(headers, rows):
        click.echo(line)


def print_fields(fields: Sequence[tuple[str, str]]) -> None:
    """`name:   value` lines, values aligned."""
    width = max(len(name) for name, _ in fields) + 1
    for name, value in fields:
        click.echo(f"{name + ':':<{width}}  {value}")


def or_dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """`--env K=V` options -> a dict; a pair without `=` is a usage error."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="'--env'")
        env[name] = value
    return env


def stdout_closed() -> None:
    """stdout went away (`| head`): stop quietly, as other Unix tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(0)
