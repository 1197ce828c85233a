"""Redaction: the one path every output takes before it leaves the process.

Result files, Markdown views, log records (both formats), state rows, repair tasks and
tool arguments shown to a reviewer all pass through a :class:`Redactor`. A secret is
matched as written and in the encoded forms a model or a tool might print it in:
base64 (standard and URL-safe, at each of the three byte alignments), hex (lower and
upper case) and URL-encoded. Which values are secret: secret config fields, and the
values of environment variables whose names contain KEY, TOKEN, SECRET or PASSWORD
(DESIGN §4).
"""

from __future__ import annotations

import base64
import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic_core import to_json

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"
#: Shorter values are not treated as secrets: they would match everywhere.
MIN_SECRET_LENGTH = 4
#: Encoded forms are matched only for secrets at least this long (shorter encodings
#: would turn up by chance in ordinary text).
_MIN_ENCODED_LENGTH = 8

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True for names whose values must never be shown (DESIGN §4)."""
    return bool(_SECRET_NAME.search(name))


def is_secret_header(name: str) -> bool:
    """True for HTTP header names whose values are credentials."""
    return name.lower() in {"authorization", "proxy-authorization"} or is_secret_name(name)


def secret_env_values(environ: Mapping[str, str]) -> list[str]:
    """Values of environment variables with secret-looking names."""
    return [v for k, v in environ.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH]


def _base64_forms(raw: bytes) -> set[str]:
    """The parts of ``raw``'s base64 text that depend on ``raw`` alone, at each alignment."""
    forms = set()
    for offset in range(3):
        first = -(-offset * 8 // 6)  # the first character holding no prefix bit
        last = (offset + len(raw)) * 8 // 6  # one past the last holding no padding bit
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + raw).decode("ascii")
            forms.add(text[first:last])
    return forms


def encoded_forms(secret: str) -> set[str]:
    """``secret`` as written and in the encodings it is also matched in."""
    forms = {secret}
    if len(secret) >= _MIN_ENCODED_LENGTH:
        raw = secret.encode("utf-8")
        forms |= _base64_forms(raw)
        forms |= {raw.hex(), raw.hex().upper(), quote(secret, safe="")}
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class Redactor:
    """Replaces every known secret, in every matched form, with ``[redacted]``."""

    def __init__(self, secret_values: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in secret_values:
            if len(value) >= MIN_SECRET_LENGTH:
                forms |= encoded_forms(value)
        # Longest first, so a secret that contains another is replaced whole.
        self._values = sorted(forms, key=len, reverse=True)
        # JSON escapes character by character, so a string holding a secret serializes
        # to text holding the secret's escaped form.
        self._in_json = [to_json(v)[1:-1] for v in self._values]

    def __bool__(self) -> bool:
        return bool(self._values)

    def in_json(self, text: bytes) -> bool:
        """True if serialized JSON ``text`` may hold a secret (then redact the data)."""
        return any(escaped in text for escaped in self._in_json)

    def text(self, value: str) -> str:
        """``value`` with every secret replaced."""
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def data(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` with every secret in every string replaced."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value

    def arguments(self, value: Any) -> Any:
        """Tool arguments for the record: values under secret-named keys masked, known
        secret values replaced everywhere else."""
        if isinstance(value, dict):
            return {
                k: REDACTED if is_secret_name(str(k)) else self.arguments(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.arguments(v) for v in value]
        return self.data(value)


class RedactingFilter(logging.Filter):
    """A logging filter that masks every known secret in a record before any handler
    writes it (its message, and the structured ``omni`` fields of JSON logs)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self._redactor.text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if hasattr(record, "omni"):
            record.omni = self._redactor.data(record.omni)
        return True
