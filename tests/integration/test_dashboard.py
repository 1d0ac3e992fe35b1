"""The Grafana dashboard shipped in the package asks only for series that /metrics exports."""

from __future__ import annotations

import json
import re
from importlib.resources import files

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.conftest import StartWorkers
from tests.helpers import create_course, enroll, wait_until

DASHBOARD = json.loads(files("courseflow").joinpath("dashboards/grafana.json").read_text())
_SERIES = re.compile(r"\bcourseflow_[a-z_]+")
# A sample's name is its family's plus one of these.
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _asked_for() -> set[str]:
    expressions = [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]
    return {_family(name) for expr in expressions for name in _SERIES.findall(expr)}


def _family(sample: str) -> str:
    for suffix in _SUFFIXES:
        if sample.endswith(suffix):
            return sample.removesuffix(suffix)
    return sample


def test_every_series_the_dashboard_asks_for_is_exported(client: TestClient, start_workers: StartWorkers) -> None:
    create_course(client, 1, 1)
    for student in (1, 2):
        assert enroll(client, student, 1)["status"] == "queued"
    start_workers()
    wait_until(lambda: client.get("/metrics").json()["queue_depth"] == 0, what="both requests decided")
    scraped = client.get("/metrics", headers={"Accept": "text/plain"})
    assert scraped.status_code == 200
    exported = {family.name for family in text_string_to_metric_families(scraped.text)}
    asked = _asked_for()
    assert len(asked) >= 10
    assert asked <= exported, sorted(asked - exported)
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
