# syntax=docker/dockerfile:1
#
# lookout's container image: one static executable on an empty base (scratch), run as an
# unprivileged user, listening on :9115 with the config at /etc/lookout/lookout.yml.
#
# Two ways to fill it, same image configuration (the `base` stage):
#
#   docker build -t lookout:0.1.0 .
#       The default (last) stage, `runtime`: compiles lookout in the `builder` stage with
#       scripts/build-static, the script CI runs too. Needs BuildKit (Docker's default builder
#       since 23.0), which skips the `prebuilt` stage it does not need.
#
#   scripts/build-static --rootfs CONTEXT/rootfs
#   buildah bud --target prebuilt -f Dockerfile -t lookout:0.1.0 CONTEXT
#       The `prebuilt` stage takes a root filesystem built outside, from the build context; no base
#       image is pulled. tests/deploy builds the image this way (there is no registry access in CI).

ARG RUST_VERSION=1.95

# ---- image configuration only: labels, user, port, entrypoint --------------------------------
FROM scratch AS base
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lookout" \
      org.opencontainers.image.description="A blackbox_exporter-compatible probing exporter with its own scheduler and dependency checks" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="README.md, helm/lookout/README.md"
# Numeric, so Kubernetes' runAsNonRoot can check it; the rootfs' /etc/passwd names it "lookout".
USER 65532:65532
EXPOSE 9115
# The history store lives in /var/lib/lookout (owned by the user above; mount a volume there).
ENTRYPOINT ["/usr/local/bin/lookout", "--config.file=/etc/lookout/lookout.yml", "--storage.path=/var/lib/lookout"]

# ---- the image from a root filesystem made by scripts/build-static --rootfs ------------------
FROM base AS prebuilt
COPY rootfs/ /

# ---- compile: the same script CI runs ---------------------------------------------------------
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
ARG REVISION=unknown
WORKDIR /src
COPY . .
RUN LOOKOUT_REVISION="${REVISION}" scripts/build-static --rootfs /rootfs

# ---- the default image -------------------------------------------------------------------------
FROM base AS runtime
COPY --from=builder /rootfs/ /
