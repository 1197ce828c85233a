"""What the tests share: the test MCP servers, the scripted LLM upstream, a real LiteLLM
proxy and fault set-ups, service helpers, git and CLI helpers. Imported as
``tests.support.<module>``; the servers and the upstream also run as scripts."""
