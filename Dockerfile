# syntax=docker/dockerfile:1
# The gateway image: `mcp-gateway serve --host 0.0.0.0` on port 8000, as a non-root user.
# Build from the repository root: docker build -t mcp-gateway:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the package and its dependencies into a virtualenv -------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the distribution needs: dependency metadata first, so code edits reuse this layer.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --upgrade pip setuptools wheel \
 && pip install . \
 && python -c "import gateway, gateway.settings" \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# --- run: the virtualenv on a clean base, no compilers, no source tree ---------------------------
FROM ${PYTHON_IMAGE} AS run
ARG UID=10001
# busybox-static: a stdio adapter's pod copies /bin/busybox from this image into the server's container
# to start one server process per session there (docs/kubernetes.md, "stdio servers").
RUN apt-get update \
 && apt-get install -y --no-install-recommends busybox-static \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid ${UID} mcpgw \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /data --shell /usr/sbin/nologin mcpgw \
 && mkdir -p /data \
 && chown ${UID}:${UID} /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MCPGW_DATA_DIR=/data
WORKDIR /data
# Numeric user, so Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["mcp-gateway"]
CMD ["serve", "--host", "0.0.0.0"]
