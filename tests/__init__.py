"""The test suite: unit/ (no servers), integration/ (real servers and processes),
support/ (shared helpers)."""
