"""Integration tests: real MCP servers, a real LiteLLM proxy, real git, real processes."""
