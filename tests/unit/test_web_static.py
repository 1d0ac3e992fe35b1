"""The pages' own checks, run in Node: ids are never rounded, and the course form keeps the API's rules.

An answer holding an integer JavaScript cannot hold exactly is refused rather than shown rounded; the board's
form reads its limits from the OpenAPI document, so it refuses what the API refuses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from courseflow.domain import MAX_ID
from courseflow.http import openapi
from courseflow.http.app import create_app
from courseflow.platform.config import Settings

STATIC = Path(__file__).resolve().parents[2] / "courseflow" / "http" / "web" / "static"
API_JS = STATIC / "api.js"
NODE = shutil.which("node")
DOCUMENT = openapi.document(create_app(Settings.from_env()).routes, "test")

_SCRIPT = """
const { Api } = await import(process.argv[1]);
globalThis.fetch = async () => new Response(process.argv[2], { status: 200 });
try {
  const body = await new Api(null).get("/api/v1/courses");
  console.log(JSON.stringify({ ok: true, ids: body.courses.map((course) => String(course.course_id)) }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, message: error.message }));
}
"""


def _node(script: str, *args: str) -> Any:
    if NODE is None:
        pytest.fail("node is not installed: `make install` installs it (Debian package nodejs)")
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


def _read(body: str) -> dict[str, Any]:
    answer: dict[str, Any] = _node(_SCRIPT, API_JS.as_uri(), body)
    return answer


def test_courses_beyond_the_safe_bound_are_refused_not_merged() -> None:
    # The two ids a browser reads as one number: the board once showed them as one row.
    answer = _read(json.dumps({"courses": [{"course_id": 2**53}, {"course_id": 2**53 + 1}]}))
    assert answer["ok"] is False and "course_id" in answer["message"]


def test_ids_up_to_the_bound_are_read_exactly() -> None:
    answer = _read(json.dumps({"courses": [{"course_id": MAX_ID}, {"course_id": 1, "share": 0.5}]}))
    assert answer == {"ok": True, "ids": [str(MAX_ID), "1"]}


_FORM = """
const { mistake } = await import(process.argv[1]);
console.log(JSON.stringify(mistake(JSON.parse(process.argv[2]), JSON.parse(process.argv[3]))));
"""


def _mistake(values: dict[str, Any]) -> list[str] | None:
    """What the board's create form says of `values`, with the NewCourse schema the API documents."""
    schema = DOCUMENT["components"]["schemas"]["NewCourse"]
    found: list[str] | None = _node(_FORM, (STATIC / "course-form.js").as_uri(), json.dumps(schema), json.dumps(values))
    return found


@pytest.mark.parametrize("title", ["", "   ", "\t"])
def test_the_course_form_refuses_a_blank_title_as_the_api_does(title: str) -> None:
    assert _mistake({"course_id": 1, "title": title, "capacity": 5}) == ["title", "Give the course a Title."]


def test_the_course_form_takes_ids_up_to_the_bound_only() -> None:
    assert _mistake({"course_id": MAX_ID, "title": "Databases", "capacity": 5}) is None
    refused = _mistake({"course_id": str(MAX_ID + 1), "title": "Databases", "capacity": 5})
    assert refused == ["course_id", "Course ID must be a whole number from 1 up."]
