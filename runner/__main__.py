"""``python -m runner`` is the same as the ``omni`` command."""

from runner.cli.entry import main

main()
