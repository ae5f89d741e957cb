# syntax=docker/dockerfile:1
# Container image of webex-campaign-exporter.
#   docker build -t webex-campaign-exporter:dev .
#   docker run --rm -p 10580:10580 webex-campaign-exporter:dev --demo
# Both stages use the same base so that the venv's interpreter symlinks stay valid.
# Renovate/Dependabot can additionally pin the digest (python:...@sha256:...).
# Fully qualified, so that podman resolves it without a short-name search.

FROM docker.io/library/python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# .dockerignore is an allowlist: only pyproject.toml, README.md, the lock files and exporter/.
COPY . .

# Everything pip installs is pinned by version and hash in the lock files (.ci/lock writes
# them from pyproject.toml): the build backend for the wheel, then the runtime dependencies.
# The exporter's own wheel comes last, without dependencies; pip check proves the lock
# satisfies what the wheel declares. The runtime venv gets no pip of its own: /build's pip
# installs into it (--python), so the image carries no installer.
RUN python -m venv /build \
 && /build/bin/pip install --require-hashes --no-deps -r requirements-build.lock \
 && /build/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /dist . \
 && python -m venv --without-pip /opt/venv \
 && /build/bin/pip --python /opt/venv/bin/python install --require-hashes --no-deps -r requirements.lock \
 && /build/bin/pip --python /opt/venv/bin/python install --no-deps /dist/*.whl \
 && /build/bin/pip --python /opt/venv/bin/python check


FROM docker.io/library/python:3.11.14-slim-bookworm

# Keep VERSION equal to exporter/__version__ (tests/test_docker.py checks it); the release
# workflow passes the tag's version.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="webex-campaign-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Webex Campaign target groups" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/webex-campaign-exporter/webex-campaign-exporter" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Only the venv leaves the builder: no wheel, no sources, no build tools.
COPY --from=builder /opt/venv /opt/venv

# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532

EXPOSE 10580

ENTRYPOINT ["webex-campaign-exporter"]
