"""PostgreSQL connection URLs (``postgresql://user:password@host:port/db?...``): whether a
state location is one, the secrets it carries, and the form that may be shown.

A password may sit in the URL's user part or in a ``password=`` query parameter; both
are secrets (redacted wherever they could be printed), and :func:`shown` masks both,
so a URL can name a database in messages and ``omni status`` without giving it away.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from runner.core.redaction import url_secrets

_SCHEMES = ("postgresql://", "postgres://")
_MASK = "***"


def is_postgres_url(text: str) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return text.strip().lower().startswith(_SCHEMES)


def dsn_secrets(url: str) -> list[str]:
    """The password(s) in ``url`` (its user part, and a ``password=`` query parameter),
    as written and decoded, for redaction."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return url_secrets(url)
    found = [v for k, v in parse_qsl(query) if k.lower() == "password" and v]
    return sorted({*url_secrets(url), *found, *(unquote(v) for v in found)})


def shown(url: str) -> str:
    """``url`` with its password masked, for messages and status."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            name = user.partition(":")[0]
            netloc = f"{name}:{_MASK}@{host}"
    except ValueError:
        return f"{url.partition('://')[0]}://{_MASK}"
    query = "&".join(
        f"{k}={_MASK if k.lower() == 'password' else v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
