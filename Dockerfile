# syntax=docker/dockerfile:1
#
# One image for both the web app (`gunicorn wsgi:app`, the default command) and
# the tasks it launches as Kubernetes Jobs (`python -m webapp.tasks.donation_receipt`,
# set by the jobspec's `command`). See docs/DEPLOYMENT.md.
#
#   docker build -t jobpulse:latest .
#
# Layout at run time (the app finds static/ and jobspecs/ next to its package,
# PROJECT_ROOT = webapp/..):
#   /opt/venv   the dependencies only (from setup.cfg install_requires)
#   /app        webapp/ static/ jobspecs/ wsgi.py gunicorn.conf.py, on PYTHONPATH

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: resolve the dependencies from the project's own wheel metadata ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml setup.cfg ./
COPY webapp/ webapp/

# Build the wheel (this checks the packaging), install it to pull in exactly
# the dependencies setup.cfg declares, then uninstall the package itself: the
# code runs from /app, where static/ and jobspecs/ sit beside it.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir /dist . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install /dist/jobpulse-*.whl \
    && /opt/venv/bin/pip uninstall --yes jobpulse \
    && /opt/venv/bin/python -c "import flask, flask_sock, gevent, gunicorn, kubernetes, marshmallow, yaml"

# --- runtime -------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# uid/gid 10001: the jobspecs' securityContext runs the task as runAsUser 10001
RUN groupadd --system --gid 10001 jobpulse \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /tmp --shell /usr/sbin/nologin jobpulse

# HOME=/tmp: writable under readOnlyRootFilesystem (/tmp is an emptyDir there);
# gunicorn >= 25.1 creates its control socket in $HOME/.gunicorn/.
ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    BIND=0.0.0.0:8000 \
    DATABASE_PATH=/tmp/jobpulse/jobpulse.sqlite3

COPY --from=build /opt/venv /opt/venv

# Owned by root and read-only to the app user; the root filesystem can be
# mounted read-only (only DATABASE_PATH's folder and /tmp are written).
WORKDIR /app
COPY jobspecs/ jobspecs/
COPY static/ static/
COPY wsgi.py gunicorn.conf.py ./
COPY webapp/ webapp/
# Readable whatever the checkout's umask; byte-compiled once at build time,
# since nothing is written at run time (PYTHONDONTWRITEBYTECODE) and tasks start faster.
RUN chmod -R a+rX /app \
    && python -m compileall -q /app/webapp /app/wsgi.py

USER 10001:10001
EXPOSE 8000
CMD ["gunicorn", "wsgi:app"]
