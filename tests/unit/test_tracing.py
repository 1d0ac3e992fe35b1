"""Tracing configured from the environment, without any server."""

from __future__ import annotations

import pytest

from courseflow.platform import tracing


def test_configure_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert tracing.configure("courseflow-test") is None and tracing.tracer() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "enrollment-api")
    try:
        provider = tracing.configure("courseflow-api")
        assert provider is not None and tracing.tracer() is not None
        assert provider.resource.attributes["service.name"] == "enrollment-api"
    finally:
        tracing.shutdown()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(SystemExit, match="zipkin"):
        tracing.configure("courseflow-api")
