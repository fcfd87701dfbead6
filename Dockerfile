# syntax=docker/dockerfile:1
# The taskpulse production image: `docker run IMAGE worker | migrate | sql "SELECT 1" | status ...`
# Production installs the package with the `worker` extra, without `embedded` (no Tansu broker, no chDB):
# it talks to Apache Kafka and a ClickHouse server (see deploy/README.md).

# ---------------------------------------------------------------- build: a venv with taskpulse
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
RUN python -m venv /opt/taskpulse
COPY . .
RUN /opt/taskpulse/bin/pip install ".[worker]" \
 && /opt/taskpulse/bin/taskpulse --help > /dev/null \
 && mkdir -p deploy/alerts

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim

ENV PATH=/opt/taskpulse/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TASKPULSE_DATA_DIR=/var/lib/taskpulse \
    TASKPULSE_API_HOST=0.0.0.0 \
    TASKPULSE_API_PORT=6066

RUN groupadd --system --gid 10001 taskpulse \
 && useradd --system --uid 10001 --gid taskpulse --home-dir /var/lib/taskpulse \
        --no-create-home --shell /usr/sbin/nologin taskpulse \
 && mkdir -p /var/lib/taskpulse \
 && chown taskpulse:taskpulse /var/lib/taskpulse

COPY --from=build /opt/taskpulse /opt/taskpulse
# TASKPULSE_ALERT_RULES defaults to deploy/alerts/rules.yml, relative to the working directory.
COPY --from=build /src/deploy/alerts /app/deploy/alerts

WORKDIR /app
USER taskpulse
# /metrics, /api/status, /api/sql
EXPOSE 6066

ENTRYPOINT ["taskpulse"]
CMD ["worker"]
