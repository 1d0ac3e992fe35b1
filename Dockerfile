# One image for every part of CourseFlow: `docker run IMAGE api|worker|projector|migrate|check|...`.
# Nothing secret is built in: URLs, passwords and the token key come from the environment at run time.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone: their layer is reused until the dependencies change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && /opt/venv/bin/pip install -r requirements.txt
COPY README.md ./
COPY courseflow courseflow
COPY projections projections
# The migrations ship inside the wheel (package courseflow.sql): an installed copy finds them itself.
COPY sql sql
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir dist . \
    && /opt/venv/bin/pip install --no-deps dist/*.whl

FROM python:3.11-slim
RUN groupadd --system --gid 10001 courseflow \
    && useradd --system --uid 10001 --gid courseflow --create-home --home-dir /home/courseflow \
        --shell /usr/sbin/nologin courseflow
# Owned by root and read-only to the application: it cannot rewrite its own code or migrations.
COPY --from=build /opt/venv /opt/venv
# SERVER_HOST: inside a container the API must listen beyond loopback to be reachable at all.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVER_HOST=0.0.0.0
WORKDIR /home/courseflow
USER 10001:10001
EXPOSE 8000
# Liveness, not readiness: an orchestrator that replaces unhealthy containers must not kill every API process
# while PostgreSQL or Redis is away (/ready says that, and compose.yaml asks it). Only the API serves HTTP:
# compose.yaml turns this check off for the worker, the projector and migrate.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SERVER_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["courseflow"]
CMD ["api"]
