"""Redaction: the one path every output takes before it leaves the process.

Result files, Markdown views, log records (both formats), state rows, repair tasks and
tool arguments shown to a reviewer all pass through a :class:`Redactor`. A secret is
matched as written and in the encoded forms a model or a tool might print it in:
base64 (standard and URL-safe, at each of the three byte alignments), hex (lower and
upper case) and URL-encoded; and, for secrets long enough, *split*: with any run of
separators (spaces, line breaks, dashes, colons, other punctuation) between its letters
and digits, as a wrapped line or ``s-k-…`` spells it. A secret cut into parts that are
printed apart (halves in two fields, or with other text between) cannot be told from
ordinary text and is not matched (README, "What omni trusts"). The userinfo of any URL
(``scheme://user:password@``) is masked too, known or not. Which values are secret:
secret config fields (URL userinfo included), and the values of environment variables
whose names contain KEY, TOKEN, SECRET or PASSWORD (DESIGN §4).
"""

from __future__ import annotations

import base64
import logging
import re
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"
#: Shorter values are not treated as secrets: they would match everywhere.
MIN_SECRET_LENGTH = 4
#: Encoded forms are matched only for secrets at least this long (shorter encodings
#: would turn up by chance in ordinary text).
_MIN_ENCODED_LENGTH = 8

#: Texts up to this long are remembered with their redacted form (up to _SHORT_KEPT).
_SHORT, _SHORT_KEPT = 256, 4096
#: Split forms are matched only for secrets with at least this many letters and digits.
_MIN_SPLIT_LENGTH = 10

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
#: Every byte but an ASCII letter or digit: deleted to compare a text's letters and digits.
_NOT_ALNUM = bytes(b for b in range(256) if not (b < 128 and chr(b).isalnum()))
#: In JSON text an escape (``\n``, ``\u00e9``) stands for one character that is not a
#: letter or digit (the serializer escapes no ASCII letter or digit).
_JSON_ESCAPE = re.compile(rb"\\(?:u[0-9a-fA-F]{4}|.)")
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#@\"'<>\\]+)@")
_USERINFO_BYTES = re.compile(rb"://[^\s/?#@\"'<>\\]+@")


def is_secret_name(name: str) -> bool:
    """True for names whose values must never be shown (DESIGN §4)."""
    return bool(_SECRET_NAME.search(name))


def is_secret_header(name: str) -> bool:
    """True for HTTP header names whose values are credentials."""
    return name.lower() in {"authorization", "proxy-authorization"} or is_secret_name(name)


def secret_env_values(environ: Mapping[str, str]) -> list[str]:
    """Values of environment variables with secret-looking names."""
    return [v for k, v in environ.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH]


def without_userinfo(url: str) -> str:
    """``url`` without its ``user:password@`` part, for printing."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(r"\1", url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def url_secrets(url: str | None) -> list[str]:
    """The credentials in ``url``'s userinfo: the password, or a lone user name (a
    token sent as the user, ``https://TOKEN@host``), as written and decoded."""
    if not url or "@" not in url:
        return []
    try:
        userinfo = urlsplit(url).netloc.rpartition("@")[0]
    except ValueError:
        return []
    user, colon, password = userinfo.partition(":")
    secret = password if colon else user
    return [v for v in dict.fromkeys((secret, unquote(secret))) if len(v) >= MIN_SECRET_LENGTH]


def text_without_userinfo(text: str) -> str:
    """``text`` (an error message, a reply body) with the ``user:password@`` part of
    every URL in it removed."""
    return _USERINFO.sub(r"\1", text)


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


def _letters(text: str) -> bytes:
    """The ASCII letters and digits of ``text``, in order (fast: no regex)."""
    return text.encode("ascii", "ignore").translate(None, _NOT_ALNUM)


def _split_pattern(letters: str) -> re.Pattern[str]:
    """``letters`` (a secret's letters and digits) with any separators between them."""
    return re.compile("[^A-Za-z0-9]*".join(map(re.escape, letters)))


class Redactor:
    """Replaces every known secret, in every matched form, with ``[redacted]``; and the
    userinfo of every URL."""

    def __init__(self, secret_values: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in secret_values:
            if len(value) >= MIN_SECRET_LENGTH:
                forms |= encoded_forms(value)
        # Longest first, so a secret that contains another is replaced whole.
        self._values = sorted(forms, key=len, reverse=True)
        # JSON escapes character by character, so a string holding a secret serializes
        # to text holding the secret's escaped form.
        self._in_json: list[bytes] = []
        if self._values:  # pydantic_core loads only when there are secrets to find
            # pylint: disable-next=import-outside-toplevel
            from pydantic_core import to_json  # noqa: PLC0415

            self._in_json = [to_json(v)[1:-1] for v in self._values]
        # Split forms: a form's letters and digits, found in a text's letters and digits
        # (a cheap test), then matched with the separators between them.
        letters = {_letters(form) for form in self._values}
        self._split = [
            k for k in sorted(letters, key=len, reverse=True) if len(k) >= _MIN_SPLIT_LENGTH
        ]
        self._patterns: dict[bytes, re.Pattern[str]] = {}  # compiled when first needed
        # Short texts repeat (event details, log lines): each is redacted once.
        self._short: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self._values)

    def in_json(self, text: bytes) -> bool:
        """True if serialized JSON ``text`` may hold a secret or a URL's userinfo (then
        redact the data)."""
        if any(escaped in text for escaped in self._in_json):
            return True
        if b"://" in text and _USERINFO_BYTES.search(text):
            return True
        if self._split:
            flat = _JSON_ESCAPE.sub(b"", text).translate(None, _NOT_ALNUM)
            return any(key in flat for key in self._split)
        return False

    def text(self, value: str) -> str:
        """``value`` with every secret, and every URL's userinfo, replaced."""
        if len(value) > _SHORT:
            return self._clean(value)
        clean = self._short.get(value)
        if clean is None:
            if len(self._short) >= _SHORT_KEPT:
                self._short.clear()
            clean = self._short[value] = self._clean(value)
        return clean

    def _clean(self, value: str) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if self._split:
            flat = _letters(value)
            for key in self._split:
                if key in flat:
                    pattern = self._patterns.get(key) or self._patterns.setdefault(
                        key, _split_pattern(key.decode("ascii"))
                    )
                    value = pattern.sub(REDACTED, value)
        if "://" in value:
            value = _USERINFO.sub(rf"\1{REDACTED}@", value)
        return value

    def data(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` with every secret in every string replaced."""
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
    writes it: its message, its traceback and stack, and the structured ``omni`` fields
    of JSON logs."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # pylint: disable=broad-exception-caught  # a bad format string
            message = f"{record.msg!s} {record.args!r}"
        clean = self._redactor.text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Formatters print a record's exc_text when set: the traceback, redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redactor.text(record.stack_info)
        if hasattr(record, "omni"):
            record.omni = self._redactor.data(record.omni)
        return True


class RedactingWriter:
    """A text stream that redacts what passes through it, a line at a time, into
    ``inner`` (the CLI's stdout and stderr: tables, JSON, errors and tracebacks)."""

    def __init__(self, inner: IO[str], redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor
        self._pending = ""

    def write(self, text: str) -> int:
        """Take ``text``; whole lines go on at once, a partial line at :meth:`flush`."""
        self._pending += text
        end = self._pending.rfind("\n") + 1
        if end:
            lines, self._pending = self._pending[:end], self._pending[end:]
            self.inner.write(self.redactor.text(lines))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        """Write each of ``lines``."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Pass on what is pending, then flush ``inner``."""
        if self._pending:
            pending, self._pending = self._pending, ""
            self.inner.write(self.redactor.text(pending))
        self.inner.flush()

    def __getattr__(self, name: str) -> Any:
        # isatty, fileno, encoding, ...: as the stream it wraps.
        return getattr(self.inner, name)
