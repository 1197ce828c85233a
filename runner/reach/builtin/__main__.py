"""``python -m runner.reach.builtin --workspace DIR``: serve the built-in executor over stdio."""

from runner.reach.builtin.server import main

main()
