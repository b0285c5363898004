# One image for every process of the scheduler; the argument names the module to run (ENTRYPOINT is python -m):
#   docker run IMAGE                     the API (CMD api), listening on HOST:PORT = 0.0.0.0:3080
#   docker run IMAGE worker              one worker
#   docker run IMAGE shared.db.migrate   apply pending migrations, then exit
# Configuration comes from the environment only (shared/settings.py; the README's configuration table).

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The project with its runtime dependencies only (not the dev or embedded extras), as a regular install: the
# API's /health reports the installed distribution's version.
WORKDIR /src
COPY pyproject.toml ./
COPY api/ api/
COPY worker/ worker/
COPY shared/ shared/
COPY schedctl/ schedctl/
# The migrations ship inside the package (sql/ is installed as shared.db.migrations); the build fails if the
# installed package (-I: not the copy in the working directory) has none.
COPY sql/ sql/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/python -I -c 'from shared.db.migrate import migration_files; assert migration_files(), "no migrations"'

FROM python:3.11-slim

# A fixed numeric uid/gid, so Kubernetes can verify runAsNonRoot (the Helm chart runs it as 10001 too).
RUN groupadd --system --gid 10001 scheduler \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin scheduler

# Same base image in both stages, so the venv's interpreter links stay valid.
COPY --from=build /opt/venv /opt/venv

# PYTHONDONTWRITEBYTECODE: pip compiled the bytecode at install time, and the root filesystem is read-only in
# Kubernetes. HOST: the API must listen on every interface in a container (the default is 127.0.0.1).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=3080

USER 10001:10001
EXPOSE 3080

ENTRYPOINT ["python", "-m"]
CMD ["api"]
