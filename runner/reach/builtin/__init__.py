"""The built-in executor: an MCP server shipped in the package.

Started over stdio as ``python -m runner.reach.builtin --workspace DIR``. Its tools (echo,
read_file, write_file, list_dir, run) see only the workspace folder. This package
imports nothing by itself, so the server process starts as fast as the ``mcp`` SDK
allows.
"""
