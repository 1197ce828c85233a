"""The ``omni`` console script (and ``python -m runner``): notes the stop signals
first, then loads the command line.

Importing the command line (typer, rich, pydantic, the state store) takes a while;
a SIGTERM or SIGINT in that time must not kill service mode half-started
(:mod:`runner.app.signals`), so the handlers go in before any of it is imported.
"""

from __future__ import annotations

import os

from runner.app.signals import EarlySignals

#: pydantic looks for plugins (third-party code that sees every validation, the
#: config's secrets included) by scanning every installed package's entry points: a
#: few hundredths of a second at start-up, for plugins omni never uses.
_NO_PYDANTIC_PLUGINS = ("PYDANTIC_DISABLE_PLUGINS", "__all__")


def main() -> None:
    """Console-script entry point."""
    signals = EarlySignals().install()
    os.environ.setdefault(*_NO_PYDANTIC_PLUGINS)
    # pylint: disable-next=import-outside-toplevel  # only now: see the module docstring
    from runner.cli.main import main as cli  # noqa: PLC0415

    cli(signals)
