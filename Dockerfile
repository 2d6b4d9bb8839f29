# The service image. Classic-builder compatible (no RUN --mount): CI machines have no buildx.
# The base image is named once; scripts/offline-images builds a local equivalent when no
# registry can be reached.
ARG PYTHON_IMAGE=python:3.13-slim

# --- build: the locked dependencies into a virtual environment -----------------------------
FROM ${PYTHON_IMAGE} AS build
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m pip install --no-cache-dir --break-system-packages "uv==0.13.9"
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project --python "$(command -v python3)" \
    && rm -rf /root/.cache

# --- app: the environment and the code, nothing else ----------------------------------------
FROM ${PYTHON_IMAGE} AS app
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY hypercorn.toml ./
COPY service ./service
RUN python3 -m compileall -q service
ARG VERSION=dev
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_VERSION=${VERSION}
USER app:app
EXPOSE 8000
# Exec form: the server is the process that receives SIGTERM (and starts its lame duck).
CMD ["python", "-m", "service.server"]

# --- bench: the app plus the peer ASGI servers (uvicorn, granian) of the locked `bench-servers`
# group, so that every server scripts/bench runs has the same code and dependencies. Never
# deployed (compose.bench.yaml: target bench).
FROM build AS bench-build
RUN uv sync --locked --no-dev --group bench-servers --no-install-project \
       --python "$(command -v python3)" \
    && rm -rf /root/.cache

FROM app AS bench
COPY --from=bench-build /opt/venv /opt/venv

# The default target stays the app: the classic builder builds the last stage.
FROM app
