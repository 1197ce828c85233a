"""``python -m runner`` is the same as the ``omni`` command."""

from runner.cli.main import main

main()
