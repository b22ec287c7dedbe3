# syntax=docker/dockerfile:1
# One image for every gpudra service and the gpudra CLI. What runs is chosen by the command:
#   python -m services.<name>   (kubelet_shim, discovery, claim_preparation, health, compute_domain, auth_callout)
#   gpudra ...                  (the CLI; `gpudra up` runs the whole standalone system in one container)
# Kubernetes (deploy/kustomize) and docker-compose.yml both use it that way, so there is no ENTRYPOINT.
#   docker build -t ghcr.io/gpudra/gpudra:0.1.0 .
FROM python:3.11-slim

LABEL org.opencontainers.image.title="gpudra" \
      org.opencontainers.image.description="Kubernetes DRA driver for GPUs as event-driven services over NATS JetStream" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed numeric user (10001), so Kubernetes' runAsNonRoot can verify it. The node containers that need
# root (sockets in the kubelet's directories, device access) ask for it explicitly in their securityContext.
RUN groupadd --system --gid 10001 gpudra \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gpudra

# The runtime dependencies only (no [dev] extras), installed from a copy of the repository that .dockerignore
# trims to the packaged code. The copy is removed in the same layer.
COPY . /src
RUN pip install /src && rm -rf /src

# Mount points, owned by the service user and closed to others. In Kubernetes hostPath or emptyDir volumes
# replace them; Docker named volumes (docker-compose.yml) start with this owner and mode. /trust is
# docker-compose's: `gpudra bus trust` writes the NATS authority and every client's credentials there.
RUN mkdir -p /var/lib/gpudra /var/lib/kubelet /var/run/cdi /trust \
 && chown 10001:10001 /var/lib/gpudra /var/lib/kubelet /var/run/cdi /trust \
 && chmod 0750 /var/lib/gpudra /var/lib/kubelet /var/run/cdi \
 && chmod 0700 /trust

# Bytecode was compiled at install; never try to write it at run time (root filesystems are read-only in the
# cluster). Logs go straight to the container runtime.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /var/lib/gpudra

CMD ["gpudra", "--help"]
