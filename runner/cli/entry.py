"""The ``omni`` console script (and ``python -m runner``): notes the stop signals
first, then loads the command line.

Importing the command line (typer, rich, pydantic, the state store) takes a while;
a SIGTERM or SIGINT in that time must not kill service mode half-started
(:mod:`runner.app.signals`), so the handlers go in before any of it is imported.
"""

from __future__ import annotations

from runner.app.signals import EarlySignals


def main() -> None:
    """Console-script entry point."""
    signals = EarlySignals().install()
    # pylint: disable-next=import-outside-toplevel  # only now: see the module docstring
    from runner.cli.main import main as cli  # noqa: PLC0415

    cli(signals)
