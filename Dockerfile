# dagsync image: a drop-in for the git-sync image of the Airflow Helm chart.
#
#   docker build -t dagsync:0.1.0 .
#   docker run --rm -v "$PWD/out:/git" dagsync:0.1.0 once --root /git --repo https://…
#
# No CMD on purpose: the Airflow chart starts the git-sync image with no command and no args,
# only git-sync environment variables, and bare `dagsync` then behaves as git-sync would
# (`run`, or `once` for the init container). A default CMD would make the init container
# run forever.

ARG PYTHON_VERSION=3.12

# ---- builder: the venv with dagsync and every optional SDK --------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

# gcc only lives in this stage: crcmod (oss2's CRC-64 check) has no wheels and falls back to a
# pure-Python CRC, orders of magnitude slower, when it cannot compile its C extension.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A venv without pip or setuptools: the base image's pip installs into it (--python), so the
# final image carries only dagsync and its dependencies.
RUN python -m venv --without-pip /opt/dagsync

WORKDIR /src
COPY pyproject.toml README.md ./
COPY dagsync ./dagsync
# "./[all]" is this project with its `all` extra (oss2, azure-storage-file-share, boto3,
# google-cloud-storage, azure-storage-blob, azure-identity); the dependency
# versions are bounded by pyproject.toml.
RUN pip --python /opt/dagsync/bin/python install --no-cache-dir "./[all]" \
    && /opt/dagsync/bin/dagsync version

# ---- final: slim Python + git, ssh, tini ---------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="dagsync" \
      org.opencontainers.image.description="Syncs Airflow DAG files from git, Alibaba Cloud OSS, Azure Files or a local directory into a shared volume, published by an atomic symlink swap; a drop-in for the git-sync image." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:${PYTHON_VERSION}-slim-bookworm"

# git and openssh-client for the git source; tini as PID 1 reaps git/ssh children and forwards
# SIGTERM to dagsync; libnss-wrapper (100 kB) lets dagsync give OpenSSH a passwd entry when it
# runs as a uid the image does not know (OpenSSH refuses to start without one, and /etc/passwd is
# read-only under readOnlyRootFilesystem). Versions are not pinned: see .hadolint.yaml.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client tini libnss-wrapper \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/dagsync /opt/dagsync

# The shared volume's usual mount point, writable by group 0 for any uid (OpenShift-style).
RUN install -d -m 0775 -o 65533 -g 0 /git

# HOME=/tmp: git and ssh write there (an emptyDir under readOnlyRootFilesystem); no .pyc files
# are written at run time (the venv's were compiled at build time). No DAGSYNC_* variables here:
# they would override the git-sync variables the Airflow chart sets (docs/reference.md, section 7).
ENV PATH=/opt/dagsync/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /git
# git-sync's uid, group 0; any other uid works too (no passwd entry is needed).
USER 65533:0
EXPOSE 9797
ENTRYPOINT ["/usr/bin/tini", "--", "dagsync"]
