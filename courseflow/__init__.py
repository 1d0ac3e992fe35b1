"""CourseFlow: course enrollment that survives the first second of registration."""

import os

# prometheus-client opens its per-process files in PROMETHEUS_MULTIPROC_DIR the moment a metric is defined,
# and fails if the directory is missing: make sure it exists before anything in the package defines one.
if _metrics_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(_metrics_dir, exist_ok=True)
