# syntax=docker/dockerfile:1
# omni in a container. `docker run -v "$PWD:/work" omni-orchestrator` runs the service
# (`omni run`) on the repository mounted at /work; any other omni command works too,
# e.g. `docker run -v "$PWD:/work" omni-orchestrator run --once`.
FROM python:3.12-slim

# git: for the git task source and for --commit / --push.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*

COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/omni \
    PATH=/opt/omni/bin:$PATH

WORKDIR /app
# The dependencies first, exactly as uv.lock pins them (a layer that changes only with
# the lock), then omni itself.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY runner ./runner
RUN uv sync --frozen --no-dev --no-editable

RUN useradd --create-home --uid 10001 omni && mkdir /work && chown omni /work
USER omni
WORKDIR /work
ENTRYPOINT ["omni"]
CMD ["run"]
