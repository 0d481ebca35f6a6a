# labeler: API server and queue worker image (CPU).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_DISABLE_TELEMETRY=1

# CPU-only torch first, so the package install does not pull the CUDA wheels.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
# Editable install keeps the repository layout (prompts/, migrations/) that settings resolve.
COPY . .
RUN pip install -e ".[queue,postgres]"

RUN useradd --create-home --uid 1000 labeler && mkdir -p /data && chown labeler /data
USER labeler
ENV LABELER_DATA_DIR=/data \
    LABELER_PROMPTS_DIR=/app/prompts
VOLUME ["/data"]
EXPOSE 8000
CMD ["labeler", "serve", "--host", "0.0.0.0", "--port", "8000"]
