# The worker and gateway image: the environment the README's commands build (`make install`:
# requirements.lock with --require-hashes, Python 3.11), plus the code the processes import.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.lock Makefile ./
# llama-cpp-python is compiled here: for any x86-64 CPU with AVX2, not only the build machine's.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN make install PY=python3.11

FROM ${PYTHON_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin chat \
    && install -d -o 10001 -g 10001 /data/payloads
# /data/payloads: the payload store's mount point (docker-compose.yml); a new named volume
# takes this directory's owner, so the non-root user can write there.
WORKDIR /app
# The same path as in the build stage: a virtualenv's scripts name their interpreter by path.
COPY --from=build /app/.venv /app/.venv
COPY common ./common
COPY workflows ./workflows
COPY activities ./activities
COPY tools ./tools
COPY api ./api
COPY worker ./worker
COPY cli ./cli
# Bytecode now: the code is read-only to the user below, and the sandbox imports the workflow
# modules again for every session a worker takes up (worker/bytecode.py).
RUN python -m compileall -q common workflows activities tools api worker cli
USER 10001:10001
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
# docker-compose.yml picks `python -m worker` (both worker roles) or `python -m api`.
CMD ["python", "-m", "worker"]
