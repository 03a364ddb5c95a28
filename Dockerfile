# syntax=docker/dockerfile:1
# Build a wheel, then install it into a slim runtime as a non-root user. The root filesystem can be
# read-only: the broker writes only to /data (data_dir) and /tmp, both volumes in the chart.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY broker ./broker
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/broker-*.whl

FROM python:${PYTHON_VERSION}-slim AS runtime
# The image holds whatever version the checkout builds; VERSION only labels it (--build-arg VERSION=...).
ARG VERSION=""
ARG REVISION=unknown
LABEL org.opencontainers.image.title="broker" \
      org.opencontainers.image.description="Lambda's event source mappings and asynchronous invocation for Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BROKER_DATA_DIR=/data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl \
 && groupadd --system --gid 10001 broker \
 && useradd --system --uid 10001 --gid broker --home-dir /nonexistent --shell /usr/sbin/nologin broker \
 && mkdir -p /data /config \
 && chown broker:broker /data
USER 10001:10001
WORKDIR /data
EXPOSE 9000
ENTRYPOINT ["broker", "run"]
CMD ["-c", "/config/broker.yaml"]
