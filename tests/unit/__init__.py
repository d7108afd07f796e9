"""Unit tests: pure logic, mirroring the package tree, with no services (no Redis, database, worker or network)."""
