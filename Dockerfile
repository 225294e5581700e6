# One image for the API and the workers of the generation service.
#   CPU (default):  docker build -t robust-guidance:cpu .
#   NVIDIA GPU:     docker build -t robust-guidance:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# torch is installed first, from the chosen index, so that installing the
# project never pulls another torch build (same reason as setup.sh).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RGUIDE_DATA_DIR=/data \
    RGUIDE_MEDIA_DIR=/data/media \
    RGUIDE_CHECKPOINT_DIR=/checkpoints

WORKDIR /app
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# Dependencies first (cached across code changes): an editable install of empty
# package stubs pulls every dependency of pyproject.toml without the code.
COPY pyproject.toml README.md /src/
RUN cd /src && mkdir -p model_core worker app rguide \
    && touch model_core/__init__.py worker/__init__.py app/__init__.py rguide/__init__.py \
    && pip install -e ".[postgres]"
# Then the service itself, not editable: pip replaces the stubs' editable install
# with the built package, which carries its templates, static files, migrations and
# bundled weights, so nothing runs from a source tree. The image keeps only
# alembic.ini and migrations/ in /app, for the compose `migrate` service's
# `alembic upgrade head` (rguide api/worker migrate from the installed package).
COPY . /src
RUN pip install --no-deps /src \
    && cp -r /src/alembic.ini /src/migrations /app/ \
    && rm -rf /src \
    && python -c "import app, worker; assert '/src/' not in app.__file__ + worker.__file__" \
    && useradd --create-home --uid 1000 rguide \
    && mkdir -p /data/media /checkpoints \
    && chown -R rguide /data

USER rguide
EXPOSE 8000
# docker-compose.yml overrides the command per service (api, worker, migrate).
CMD ["rguide", "api", "--host", "0.0.0.0", "--port", "8000"]
