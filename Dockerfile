# syntax=docker/dockerfile:1
# neo-teams-relay production image.
#   docker build -t neo-teams-relay .
#   docker run --rm -p 3978:3978 --env-file relay.env -v ./bots.toml:/etc/relay/bots.toml:ro \
#       -e RELAY_BOTS_FILE=/etc/relay/bots.toml neo-teams-relay
# Stage 1 builds the wheel; stage 2 installs only that wheel and its runtime dependencies plus the
# `fast` extra (uvloop), at the versions pinned in constraints.txt (a tested install: an image
# built next month installs what passed today), into a venv, so no source tree, compiler or build
# tool ends up in the runtime image. tests/test_packaging.py runs the same build-and-install steps
# without Docker and is part of `make test`.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY relay ./relay
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/relay PATH=/opt/relay/bin:$PATH
COPY --from=builder /wheels /wheels
COPY constraints.txt /wheels/
RUN python -m venv /opt/relay \
    && /opt/relay/bin/pip install -c /wheels/constraints.txt "$(ls /wheels/*.whl)[fast]" \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid relay --home-dir /var/lib/relay --create-home \
        --shell /usr/sbin/nologin relay
# Defaults for a container: listen on every interface, JSON logs, the SQLite journal on the
# volume (a Deployment with several replicas sets RELAY_DATABASE_URL=redis://… instead).
ENV RELAY_HOST=0.0.0.0 RELAY_PORT=3978 RELAY_LOG_FORMAT=json \
    RELAY_METRICS_HOST=0.0.0.0 RELAY_METRICS_PORT=9464 \
    RELAY_DATABASE_URL=sqlite:////var/lib/relay/relay.db
WORKDIR /var/lib/relay
VOLUME ["/var/lib/relay"]
USER 10001:10001
# 3978: /api/messages and the probes (publish it); 9464: /metrics, for Prometheus only.
EXPOSE 3978 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request as u; r=u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RELAY_PORT','3978'), timeout=4); sys.exit(0 if r.status == 200 else 1)"]
# run_app turns SIGTERM into a graceful drain (RELAY_SHUTDOWN_GRACE) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["relay"]
CMD ["serve"]
