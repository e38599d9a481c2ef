# syntax=docker/dockerfile:1
#
# stepguard container image: a static-ish release build on Debian bookworm, run on distroless
# (glibc, no shell, no package manager) as the unprivileged `nonroot` user (65532).
#
#   docker build -t registry.example.com/stepguard:0.1.0 .
#   docker run --rm --read-only -p 9191:9191 -p 9192:9192 -p 9193:9193 \
#     -v "$PWD/my-config:/etc/stepguard:ro" -v stepguard-evidence:/var/lib/stepguard \
#     registry.example.com/stepguard:0.1.0
#
# The image needs nothing writable but the evidence spool (/var/lib/stepguard, a volume): run it
# with a read-only root filesystem. The shipped Rego policies are at /usr/share/stepguard/policies
# (point `policy.source` there, or mount your own); the config is read from the absolute path
# /etc/stepguard/config.yaml (the default CMD). `serve` without `--config` has no quickstart
# file in the image and exits with a message saying so. docs/deployment.md explains the rest.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# rust-toolchain.toml is left out: the base image's toolchain is the pinned one.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin stepguard \
    && install -D -m 0755 target/release/stepguard /out/usr/local/bin/stepguard
COPY policies/data.json /out/usr/share/stepguard/policies/data.json
COPY policies/stepguard/break_glass.rego policies/stepguard/decision.rego policies/stepguard/delegation.rego \
     policies/stepguard/lib.rego policies/stepguard/requirement.rego policies/stepguard/settings.rego \
     policies/stepguard/signals.rego policies/stepguard/validate.rego policies/stepguard/workload.rego \
     /out/usr/share/stepguard/policies/stepguard/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="stepguard" \
      org.opencontainers.image.description="Transaction-level step-up authentication for Envoy ext_authz" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /
# 9191 gRPC (ext_authz Check, grpc.health.v1), 9192 HTTP (the OIDC callback), 9193 admin
# (/metrics, /healthz, /readyz) when `listen.admin` is set.
EXPOSE 9191 9192 9193
VOLUME ["/var/lib/stepguard"]
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/stepguard"]
CMD ["serve", "--config", "/etc/stepguard/config.yaml"]
