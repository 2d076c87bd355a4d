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
#   /opt/venv   the dependencies only, as locked in requirements/app.txt
#   /app        webapp/ static/ jobspecs/ wsgi.py gunicorn.conf.py, on PYTHONPATH

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the locked dependencies, and a check that they satisfy setup.cfg ---
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# The lock (requirements/, docs/DEPENDENCIES.md) gives every exact version and
# its hashes: the image installs what `make run` and the tests install, and a
# new upstream release changes nothing here until `make lock` is run.
COPY requirements/build.txt requirements/app.txt requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip install --require-hashes -r requirements/build.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r requirements/app.txt

# Build the wheel with the locked setuptools (this checks the packaging),
# install it without dependencies and let `pip check` prove the lock satisfies
# setup.cfg, then uninstall the package itself: the code runs from /app, where
# static/ and jobspecs/ sit beside it.
COPY pyproject.toml setup.cfg README.md ./
COPY webapp/ webapp/
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
    && /opt/venv/bin/pip install --no-deps /dist/jobpulse-*.whl \
    && /opt/venv/bin/pip check \
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
