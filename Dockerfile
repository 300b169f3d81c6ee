# One image for every smsgw service (workers, Flower, the sandbox). Configured only through
# SMSGW_* environment variables; see .env.example and docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (from pyproject.toml), so code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY config ./config
COPY gateways ./gateways
COPY worker ./worker
RUN pip install ".[flower]"

# Never run as root.
RUN useradd --create-home --uid 10001 smsgw
USER smsgw

CMD ["smsgw", "--help"]
