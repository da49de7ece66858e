# The worker and gateway image: the same locked environment `make install` builds.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.lock Makefile ./
RUN make install PY=python3.11

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* && useradd --create-home chat
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY common ./common
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY worker ./worker
COPY cli ./cli
USER chat
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
# `python -m worker` or `python -m api`, chosen by docker-compose.
CMD ["python", "-m", "worker"]
