"""``python -m runner.builtin --workspace DIR``: serve the built-in executor over stdio."""

from runner.builtin.server import main

main()
