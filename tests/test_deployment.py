"""The deployment files: docker compose names every service, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from modelbay.bot import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "redis", "api", "slack", "discord", "worker-cpu", "worker-gpu"}


def test_compose_names_every_service_with_healthchecks_and_volumes() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert SERVICES <= set(services)
    for name in SERVICES:
        assert "healthcheck" in services[name], name
    for name in SERVICES - {"postgres", "redis"}:
        assert services[name]["environment"]["MODELBAY_REDIS_URL"] == "redis://redis:6379/0"
        assert {"modelbay-data:/data", "models:/models"} <= set(services[name]["volumes"])
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["worker-gpu"]["runtime"] == "nvidia"
    assert services["worker-gpu"]["command"] == ["worker", "--queues", "gpu"]
    assert services["worker-cpu"]["command"] == ["worker", "--queues", "downloads,cpu"]
    # The gpu worker's serve jobs start vLLM there, listening where the bot can reach it.
    assert services["worker-gpu"]["build"]["args"]["EXTRAS"] == "postgres,ml,serve"
    assert services["worker-gpu"]["environment"]["MODELBAY_SERVE_HOST"] == "0.0.0.0"
    assert {"postgres-data", "redis-data", "modelbay-data", "models"} <= set(compose["volumes"])


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_starts_with_two_commands_and_ci_runs_the_second() -> None:
    first, second = _readme_commands()[:2]
    assert first.endswith("modelbay console") and "\n" not in first
    assert second.endswith("python -m pytest") and "torch==2.13.0" in second
    assert "pip uninstall -y torchvision torchaudio torchcodec" in second  # see NOTES: they break transformers
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert second in ci


def test_readme_documents_every_chat_command() -> None:
    readme = (ROOT / "README.md").read_text()
    for cmd in COMMANDS:
        assert f"`{cmd.name}" in readme or f"`/{cmd.path[0]} [" in readme, cmd.name
