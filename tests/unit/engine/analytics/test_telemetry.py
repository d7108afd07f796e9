"""Prometheus metrics without services: what one answer and one job add, read back with prometheus_client's
own parser, and the names a dashboard may use."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from modelbay.engine.analytics.telemetry import Telemetry


def _samples(telemetry: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = telemetry.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_an_answer_counts_once_with_its_tokens_and_times_in_seconds() -> None:
    telemetry = Telemetry()
    telemetry.observe_answer("tiny", "ok", input_tokens=12, output_tokens=30, ttft_ms=80.0, total_ms=1500.0)
    telemetry.observe_answer("tiny", "failed", input_tokens=5, output_tokens=None, ttft_ms=None, total_ms=40.0)
    samples = _samples(telemetry)
    assert samples[("modelbay_answers_total", (("model", "tiny"), ("status", "ok")))] == 1
    assert samples[("modelbay_answers_total", (("model", "tiny"), ("status", "failed")))] == 1
    assert samples[("modelbay_tokens_total", (("direction", "input"), ("model", "tiny")))] == 17
    assert samples[("modelbay_tokens_total", (("direction", "output"), ("model", "tiny")))] == 30
    response = (("model", "tiny"),)
    assert samples[("modelbay_response_seconds_count", response)] == 2
    assert abs(samples[("modelbay_response_seconds_sum", response)] - 1.54) < 1e-9
    # 1.5 s lands in the 2 s bucket, not the 1 s one; 0.04 s in the first.
    assert samples[("modelbay_response_seconds_bucket", (("le", "1.0"), ("model", "tiny")))] == 1
    assert samples[("modelbay_response_seconds_bucket", (("le", "2.0"), ("model", "tiny")))] == 2
    # The failed answer had no first token: only one time to first token.
    assert samples[("modelbay_time_to_first_token_seconds_count", response)] == 1
    assert samples[("modelbay_time_to_first_token_seconds_bucket", (("le", "0.1"), ("model", "tiny")))] == 1


def test_job_runs_are_counted_by_kind_and_outcome() -> None:
    telemetry = Telemetry()
    telemetry.observe_job("install", "finished", 12.0)
    telemetry.observe_job("install", "failed", 3.0)
    telemetry.observe_job("install", "finished", 400.0)
    samples = _samples(telemetry)
    assert samples[("modelbay_job_seconds_count", (("kind", "install"), ("outcome", "finished")))] == 2
    assert samples[("modelbay_job_seconds_bucket", (("kind", "install"), ("le", "15.0"), ("outcome", "finished")))] == 1


def test_two_telemetries_count_apart() -> None:
    one, two = Telemetry(), Telemetry()  # two runtimes in one process (tests, the console beside a worker)
    one.observe_answer("a", "ok", input_tokens=1, output_tokens=1, ttft_ms=1.0, total_ms=2.0)
    assert ("modelbay_answers_total", (("model", "a"), ("status", "ok"))) in _samples(one)
    assert not any(name == "modelbay_answers_total" for name, _ in _samples(two))


def test_sample_names_cover_everything_exposed() -> None:
    telemetry = Telemetry()
    telemetry.observe_answer("a", "ok", input_tokens=1, output_tokens=1, ttft_ms=1.0, total_ms=2.0)
    telemetry.observe_job("probe", "finished", 1.0)
    exposed = {name for name, _ in _samples(telemetry)}
    names = telemetry.sample_names()
    assert exposed <= names
    assert {"modelbay_jobs", "modelbay_queue_depth", "modelbay_response_seconds_bucket"} <= names
