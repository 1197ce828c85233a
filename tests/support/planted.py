"""The planted secrets: the values the tests give omni as keys, passwords and tokens, and
that hostile servers and models try to get out. After the whole session the leak scan
(:mod:`tests.support.leakscan`) looks for each of them, in every form omni redacts,
in everything the suite's runs left on disk: 0 hits, or the session fails.

A test that plants a secret uses one of these (never a value of its own), so the
session-wide scan checks what its runs wrote too.
"""

from __future__ import annotations

SECRET = "sk-planted-7c1d9e4b2a6f8053c4e1d2b7"
"""The planted key: model ``api_key``s, ``lite_llm_key`` and the backup ``github_key`` in
config, ``OPENAI_API_KEY`` and the like in the environment, what a hostile MCP server or
model echoes, writes to stderr or fails with, a gateway error body."""

ENV_SECRET = "planted-env-secret-7171"
"""A secret known to omni only through the environment (a variable whose name says
TOKEN): redacted because of its name, not because the config names it."""

URL_PASSWORD = "hunter2-proxy-pass-9d41"
"""A password in a URL (``http://omni:PASSWORD@host``), from a variable whose name looks
like no secret: only the URL tells it is one."""

SECRETS = (SECRET, ENV_SECRET, URL_PASSWORD)
"""Every planted value the session-wide scan looks for."""
