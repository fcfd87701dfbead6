"""Who may call the HTTP API: bearer tokens with a name and a role, and which role each
route needs.  Pure (no I/O): the caller reads the tokens file and passes its text.

A tokens file has one token per line, ``name:role:sha256:<hex digest of the secret>``;
blank lines and lines starting with ``#`` are ignored.  Secrets are random (32 bytes from
``secrets.token_urlsafe``), so a plain SHA-256 is enough to keep a leaked file useless:
slow password hashes exist for guessable secrets.  ``taskpulse token create`` prints a
secret and its line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    READER = "reader"  # queries, exports, status, /metrics
    WRITER = "writer"  # HTTP ingest
    OPERATOR = "operator"  # reader + operations (DLQ replay, …)
    ADMIN = "admin"  # everything


#: What each role may do besides its own name: admin ⊇ operator ⊇ reader; writer only ingests.
_GRANTS: dict[Role, frozenset[Role]] = {
    Role.READER: frozenset({Role.READER}),
    Role.WRITER: frozenset({Role.WRITER}),
    Role.OPERATOR: frozenset({Role.OPERATOR, Role.READER}),
    Role.ADMIN: frozenset(Role),
}

HASH_SCHEME = "sha256"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class TokenFileError(ValueError):
    """A line of the tokens file cannot be read; the message names the line."""


@dataclass(frozen=True)
class Principal:
    """The caller a token stands for (handlers record ``name`` as the source of what it sends)."""

    name: str
    role: Role

    def may(self, needed: Role) -> bool:
        return needed in _GRANTS[self.role]


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    digest: str  # hex SHA-256 of the secret


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def token_line(name: str, role: str, secret: str) -> str:
    """The tokens-file line for ``secret`` (validated like a line read from the file)."""
    line = f"{name}:{role}:{HASH_SCHEME}:{hash_secret(secret)}"
    parse_tokens(line)
    return line


def parse_tokens(text: str, source: str = "tokens file") -> list[TokenEntry]:
    """The entries of a tokens file; ``TokenFileError`` names the first bad line."""
    entries: list[TokenEntry] = []
    names: set[str] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        where = f"{source} line {n}"
        if len(parts) != 4:
            raise TokenFileError(f"{where}: expected name:role:sha256:<hex>, got {len(parts)} field(s)")
        name, role, scheme, digest = parts
        if not _NAME.match(name):
            raise TokenFileError(f"{where}: bad token name {name!r} (letters, digits, . _ @ -; up to 64)")
        if role not in Role.__members__.values():
            raise TokenFileError(f"{where}: unknown role {role!r}; choose from {', '.join(r.value for r in Role)}")
        if scheme != HASH_SCHEME or not _HEX.match(digest):
            raise TokenFileError(f"{where}: the secret must be given as sha256:<64 lowercase hex digits>")
        if name in names:
            raise TokenFileError(f"{where}: token name {name!r} appears twice")
        names.add(name)
        entries.append(TokenEntry(name, Role(role), digest))
    return entries


class TokenTable:
    """The tokens a worker accepts.  Empty: the API is open (allowed on loopback only)."""

    def __init__(self, entries: list[TokenEntry], session_secret: str = "") -> None:
        self.entries = list(entries)
        #: what signs session cookies: from ``session_secret`` (every API process of a deployment
        #: given the same one accepts the others' cookies), else random to this table.  Never the
        #: tokens file's digests alone: whoever reads that file could sign cookies with them.
        self._session_key = (
            hashlib.sha256(f"taskpulse-session:{session_secret}".encode()).digest()
            if session_secret
            else secrets.token_bytes(32)
        )

    @classmethod
    def build(cls, api_token: str = "", file_text: str | None = None, metrics_token: str = "",
              session_secret: str = "") -> TokenTable:  # fmt: skip
        entries = parse_tokens(file_text) if file_text is not None else []
        if api_token:
            entries.append(TokenEntry("api-token", Role.ADMIN, hash_secret(api_token)))
        if metrics_token:
            entries.append(TokenEntry("metrics", Role.READER, hash_secret(metrics_token)))
        return cls(entries, session_secret)

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of ``presented``, compared in constant time against every entry."""
        digest = hash_secret(presented)
        found: Principal | None = None
        for e in self.entries:  # no early exit: the time does not depend on which entry matched
            if hmac.compare_digest(digest, e.digest) and found is None:
                found = Principal(e.name, e.role)
        return found

    def session(self, name: str, now_s: int, ttl_s: int) -> str:
        """A session cookie value for the token named ``name``, valid ``ttl_s`` from ``now_s``:
        ``<name>.<expiry>.<HMAC>``, the HMAC keyed with the session key over the token's digest
        too.  Stateless, so every API process with the same session secret accepts it; removing
        the token from the file (or changing its secret) ends its sessions."""
        entry = next(e for e in self.entries if e.name == name)
        expires = now_s + ttl_s
        return f"{name}.{expires}.{_session_mac(self._session_key, entry.digest, name, expires)}"

    def from_session(self, value: str, now_s: int) -> Principal | None:
        """The principal of a session cookie value; None when forged, expired or revoked."""
        parts = value.rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) <= now_s:
            return None
        head, expires_text, mac = parts
        entry = next((e for e in self.entries if e.name == head), None)
        if entry is None or not hmac.compare_digest(
            mac, _session_mac(self._session_key, entry.digest, head, int(expires_text))
        ):
            return None
        return Principal(entry.name, entry.role)


def _session_mac(key: bytes, digest: str, name: str, expires: int) -> str:
    mac = hmac.new(key, f"session:{name}.{expires}.{digest}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None when absent or another scheme)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


#: Path prefixes whose non-GET requests need more than the reader role.
_WRITE_ROUTES: list[tuple[str, Role]] = [
    ("/api/sql", Role.READER),  # POST only for the body; it never changes state
    ("/api/v1/events", Role.WRITER),  # HTTP ingest
    ("/api/v1/dlq", Role.OPERATOR),  # DLQ replay
    ("/api/dlq", Role.OPERATOR),
    ("/api/v1/ops", Role.OPERATOR),
]


def required_role(method: str, path: str) -> Role:
    """The role a request needs.  Reads (GET, HEAD) need a reader; a state-changing method
    needs the role of its route, admin when no route lists it (deny by default)."""
    if path == "/api/v1/audit" or path.startswith("/api/v1/audit/"):
        return Role.ADMIN  # who looked at what: admins only
    if method.upper() in ("GET", "HEAD", "OPTIONS"):
        return Role.READER
    for prefix, role in _WRITE_ROUTES:
        if path == prefix or path.startswith(prefix + "/"):
            return role
    return Role.ADMIN


#: Paths any caller may reach: the API's description (no data) and the session login/logout
#: (the login authenticates with the token it is given).
OPEN_PATHS = frozenset({"/api/v1/openapi.json", "/api/v1/docs", "/api/v1/session", "/"})
#: The web UI's page (``/``, in OPEN_PATHS) and its static files hold no data (the numbers come
#: from ``/api/v1/stream`` and the API, which are guarded): open, so the page can ask for a token.
OPEN_PREFIXES = ("/ui/",)


def is_open(path: str) -> bool:
    """Whether any caller may reach ``path`` (``OPEN_PATHS``, ``OPEN_PREFIXES``)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


#: Content types a request body may have: JSON or NDJSON, never a form (a web page could
#: send a form to the API from a browser without a CORS preflight).
BODY_TYPES = frozenset({"application/json", "application/x-ndjson", "application/ndjson"})


def body_type_allowed(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() in BODY_TYPES


__all__ = [
    "BODY_TYPES", "OPEN_PATHS", "OPEN_PREFIXES", "Principal", "Role", "TokenEntry", "TokenFileError", "TokenTable",
    "bearer", "body_type_allowed", "hash_secret", "is_open", "parse_tokens", "required_role", "token_line",
]  # fmt: skip
