"""The deployment files: docker compose names every service, and CI runs exactly the README's test command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from modelbay.bot import COMMANDS
from modelbay.engine.analytics.telemetry import Telemetry

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


# -- monitoring (Prometheus and Grafana under the compose profile `monitoring`) --------------------------------

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "modelbay.json"
# A metric name in PromQL: a word made of metric characters that is not a label name (followed by = or ~) nor
# inside a string; ours all start with modelbay_.
_METRIC = re.compile(r"\bmodelbay_[a-z0-9_]+\b")


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def test_the_dashboard_queries_only_metrics_modelbay_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "modelbay" and dashboard["panels"]
    names = Telemetry().sample_names()
    used = {name for query in _dashboard_queries() for name in _METRIC.findall(query)}
    assert {"modelbay_answers_total", "modelbay_response_seconds_bucket", "modelbay_jobs",
            "modelbay_queue_depth"} <= used
    assert used <= names, used - names
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_compose_runs_prometheus_and_grafana_under_the_monitoring_profile() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"] and "healthcheck" in services[name]
    mounts = services["prometheus"]["volumes"] + services["grafana"]["volumes"]
    for mount in mounts:
        source = mount.split(":", 1)[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    # Every process that exposes metrics on its own port is scraped there; the api on its HTTP port.
    assert services["worker-cpu"]["environment"]["MODELBAY_METRICS_PORT"] == "9100"
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert targets["modelbay-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert targets["modelbay-api"]["metrics_path"] == "/metrics"
    discovered = {name for job in scrape["scrape_configs"] for sd in job.get("dns_sd_configs", [])
                  for name in sd["names"] if sd["port"] == 9100}
    assert {"worker-cpu", "worker-gpu", "slack", "discord"} <= discovered <= set(services)
