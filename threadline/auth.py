"""Bearer tokens for what is not signed by a provider: ``POST /contacts`` and the read API.

A token table is given as a setting or a secret file, one entry per line (``;`` separates
entries in a variable as well)::

    chat,web-form=<token>          # THREADLINE_CONTACT_TOKENS: the connector names it may write
    support,sales=<token>          # THREADLINE_API_TOKENS: the audiences it may read

``#`` starts a comment line, blank lines are skipped. A token is at least 16 characters, has no
white space and is named in no message: errors name the line. Tokens are kept only as SHA-256
digests and a presented token is compared with every configured one in constant time.

The read API maps each route template to the scope it needs (``ROUTE_SCOPES`` in
projectors/api/__init__.py); ``admin`` reads everything; ``ANY`` is any valid token; a route in neither
that table nor ``OPEN`` needs ``admin`` (closed by default). No token → 401, a token without the
scope → 403, both JSON errors with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Request

from threadline.errors import ConfigError
from threadline.http import error_response, error_responses, extend_openapi
from threadline.settings import Settings

AUDIENCES = ("support", "sales", "marketing", "admin")
ANY = "any"  # any valid token, whatever its scopes (operational routes without customer data)
MIN_TOKEN_CHARS = 16
# No customer data: probes, metrics, and the API documentation pages (their assets are a static mount).
OPEN = frozenset({"/livez", "/readyz", "/metrics", "/healthz", "/docs", "/redoc"})
_CONNECTOR = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")  # ContactIn.connector


class AuthError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        self.status, self.error, self.detail = status, error, detail
        super().__init__(detail)


@dataclass(frozen=True)
class Tokens:
    """Configured tokens, as digests, each with what it grants (connector names or scopes)."""

    entries: tuple[tuple[bytes, frozenset[str]], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def grants(self, presented: str | None) -> frozenset[str] | None:
        """What ``presented`` grants, or None when it matches no token. Every entry is compared
        (no early exit) so the time taken does not tell which one, or how much, matched."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: frozenset[str] | None = None
        for known, granted in self.entries:
            if hmac.compare_digest(digest, known):
                found = granted
        return found

    @classmethod
    def parse(
        cls, text: str, *, what: str, allowed: Iterable[str] | None = None, pattern: re.Pattern | None = None
    ) -> Tokens:
        """``what`` names the setting in errors; ``allowed`` (scopes) or ``pattern`` (connector
        names) says what a grant may be."""
        allowed = frozenset(allowed) if allowed is not None else None
        entries, problems = [], []
        for n, granted, token in _entries(text):
            if not granted:
                problems.append(f"entry {n}: expected <name>[,<name>...]=<token>")
                continue
            bad = sorted(
                g
                for g in granted
                if (allowed is not None and g not in allowed) or (pattern is not None and not pattern.match(g))
            )
            if bad:
                problems.append(
                    f"entry {n}: unknown {', '.join(bad)}"
                    + (f" (expected {', '.join(sorted(allowed))})" if allowed else "")
                )
            if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
                problems.append(f"entry {n}: the token must be {MIN_TOKEN_CHARS}+ characters without spaces")
                continue
            entries.append((hashlib.sha256(token.encode()).digest(), granted))
        if problems:
            raise ConfigError(f"{what}: " + "; ".join(problems))
        digests = [d for d, _ in entries]
        if len(set(digests)) != len(digests):
            raise ConfigError(f"{what}: the same token is given twice; give each its own")
        return cls(tuple(entries))


def _entries(text: str) -> list[tuple[int, frozenset[str], str]]:
    """(entry number, names, token) of each entry of a token table; names empty when malformed."""
    out = []
    lines = [part for line in text.splitlines() for part in line.split(";")]
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names, sep, token = line.partition("=")
        granted = frozenset(x.strip() for x in names.split(",") if x.strip()) if sep else frozenset()
        out.append((n, granted, token.strip()))
    return out


def token_for(settings: Settings, table: str, name: str) -> str | None:
    """A configured token of ``table`` (``api_tokens`` or ``contact_tokens``) granting ``name``
    (for the API: that scope, or admin), for clients such as the demo; None when there is none."""
    entries = [(g, t) for _, g, t in _entries(_table(settings, table)) if g]
    exact = [t for g, t in entries if name in g]
    fallback = [t for g, t in entries if table == "api_tokens" and "admin" in g]
    return next(iter(exact or fallback), None)


def _table(settings: Settings, name: str) -> str:
    """The token table from ``name`` or the whole file ``name_file`` ("" when neither is set)."""
    value = getattr(settings.auth, name)
    if value is not None:
        return value.get_secret_value()
    path: Path | None = getattr(settings.auth, f"{name}_file")
    if path is None:
        return ""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{name}_file: cannot read {path}: {exc.strerror}") from None


def contact_tokens(settings: Settings) -> Tokens:
    return Tokens.parse(_table(settings, "contact_tokens"), what="contact_tokens", pattern=_CONNECTOR)


def api_tokens(settings: Settings) -> Tokens:
    return Tokens.parse(_table(settings, "api_tokens"), what="api_tokens", allowed=AUDIENCES)


def bearer(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def authenticate(tokens: Tokens, request: Request) -> frozenset[str]:
    granted = tokens.grants(bearer(request))
    if granted is None:
        raise AuthError(401, "unauthenticated", "send Authorization: Bearer <token>")
    return granted


def connector_credential(tokens: Tokens):
    """FastAPI dependency of ``POST /contacts``: the connector names the caller's token may write."""

    def dependency(request: Request) -> frozenset[str]:
        return authenticate(tokens, request)

    return dependency


def allows(granted: frozenset[str], scope: str) -> bool:
    return scope == ANY or scope in granted or "admin" in granted


def install(app: FastAPI, tokens: Tokens, route_scopes: Mapping[str, str], errors: tuple[int, ...] = ()) -> None:
    """Every route of ``app`` checks the caller's scope before anything else (call this before
    the routes are declared: FastAPI copies the app's dependencies into each route); the OpenAPI
    document says which routes need which scope, and that they answer 401, 403 and ``errors``."""
    unknown = sorted(s for s in route_scopes.values() if s not in AUDIENCES and s != ANY)
    if unknown:
        raise ValueError(f"unknown scopes {unknown}")

    async def scoped(request: Request) -> None:  # a coroutine: FastAPI runs a plain function in a thread
        route = getattr(request.scope.get("route"), "path", None)
        if route in OPEN:
            return
        granted = authenticate(tokens, request)
        scope = route_scopes.get(route, "admin") if route is not None else "admin"
        if not allows(granted, scope):
            raise AuthError(403, "forbidden", f"this token has no {scope} scope")

    app.router.dependencies.append(Depends(scoped))
    install_error_handler(app)

    def document(schema: dict) -> None:
        components = schema.setdefault("components", {})
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "a token of THREADLINE_API_TOKENS"}
        }
        for path, ops in schema.get("paths", {}).items():
            if path in OPEN:
                continue
            scope = route_scopes.get(path, "admin")
            for op in ops.values():
                op["security"] = [{"bearer": []}]
                who = "any valid token" if scope == ANY else f"scope {scope} (or admin)"
                op["description"] = (op.get("description", "") + f"\n\nNeeds a bearer token: {who}.").strip()
                op.setdefault("responses", {}).update(
                    {str(k): v for k, v in error_responses(401, 403, *errors).items() if str(k) not in op["responses"]}
                )

    extend_openapi(app, document)


def install_error_handler(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def _auth_error(_req: Request, exc: AuthError):
        resp = error_response(exc.status, exc.error, exc.detail)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = "Bearer"
        return resp
