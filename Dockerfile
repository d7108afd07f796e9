# One image for every ModelBay process (api, slack, discord, workers). Build the GPU flavour with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t modelbay:gpu .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# The gpu worker adds `serve` (vLLM), which its serve jobs start for `/models serve`.
ARG EXTRAS=postgres,ml

RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# torch first, from the chosen index: a bare "torch" requirement would pull the default CUDA build.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY modelbay ./modelbay
RUN pip install --no-cache-dir ".[${EXTRAS}]"

ENV MODELBAY_HOME=/data PYTHONUNBUFFERED=1
VOLUME ["/data"]
ENTRYPOINT ["modelbay"]
