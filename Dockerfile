# syntax=docker/dockerfile:1
# switchyard in a container: `docker build -t switchyard .`, then see README.md ("Docker").

# ---- build: the fully optimised binary (Cargo.toml's `dist` profile: fat LTO) ----
FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole workspace: cargo reads every member's manifest and every declared target.
COPY . .
# An explicit --target-dir: the binary is in the cache mount, whatever CARGO_TARGET_DIR says.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p switchyard-cli --target-dir /src/target \
    && install -m 0755 /src/target/dist/switchyard /usr/local/bin/switchyard

# ---- run: a slim Debian of the same release as the builder (same glibc) ----
FROM debian:bookworm-slim
# The system's CA certificates: what `tls = {}` to an upstream verifies against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --no-create-home \
       --home-dir /var/lib/switchyard --shell /usr/sbin/nologin switchyard \
    && mkdir -p /etc/switchyard /var/lib/switchyard /run/switchyard \
    && chown switchyard:switchyard /var/lib/switchyard /run/switchyard
COPY --from=builder /usr/local/bin/switchyard /usr/local/bin/switchyard
COPY config/docker.toml /etc/switchyard/switchyard.toml

# Numeric, so a runtime can tell it is not root without reading /etc/passwd.
USER 10001:10001
# The config (read at start and on SIGHUP), the journal and incidents (must outlive the
# container: a restart comes back with the last acknowledged routing), the admin socket
# (mount it to run `switchyard ctl` from another container or the host).
VOLUME ["/etc/switchyard", "/var/lib/switchyard", "/run/switchyard"]
# NO_COLOR: plain log lines for `docker logs`; SWITCHYARD_SOCKET: where `ctl` looks.
ENV NO_COLOR=1 \
    SWITCHYARD_SOCKET=/run/switchyard/admin.sock
EXPOSE 8080
# `ctl status` exits 0 only when the proxy answers on its admin socket.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["switchyard", "ctl", "--socket", "/run/switchyard/admin.sock", "status"]
ENTRYPOINT ["switchyard"]
CMD ["run", "--config", "/etc/switchyard/switchyard.toml"]
