"""Scenario tests: real services (PostgreSQL, Redis, RQ workers, vLLM, the hub/Slack/Discord stand-ins) driven end to end."""
