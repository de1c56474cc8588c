# srserve image: torch 2.13.0 with CUDA (PyPI's Linux wheel), the shipped weights, non-root.
# docker build -t srserve . ; docker run --gpus all -p 8000:8000 srserve
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin srserve
WORKDIR /app

# The heavy layer first, so code changes do not reinstall CUDA torch.
RUN pip install "torch==2.13.0"

COPY pyproject.toml README.md ./
COPY srserve ./srserve
COPY models ./models
COPY service ./service
COPY client ./client
COPY weights ./weights
# Not editable: the weights travel inside the installed package. [community]: model files mounted at
# SR_MODELS_DIR (docker run -v ~/models:/models:ro -e SR_MODELS_DIR=/models ...); its torchvision is
# built for this same PyPI torch.
RUN pip install ".[server,community]" && python -c "import srserve.service.app, srserve.models, spandrel"

ENV SR_HOST=0.0.0.0 \
    SR_PORT=8000 \
    SR_DEVICE=auto

USER srserve
EXPOSE 8000
# Ready, not just alive: models loaded and warm, not draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["srserve", "serve"]
