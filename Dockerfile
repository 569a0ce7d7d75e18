# syntax=docker/dockerfile:1
#
# activity-gateway container image.
#
#   docker build -t activity-gateway .
#   docker run --rm -p 8080:8080 -e GATEWAY__SERVER__DEV=true activity-gateway     # try it
#
# Outside dev mode the gateway refuses to start without GATEWAY__AUTH__HS256_SECRET (or another
# key source), GATEWAY__PUBLISH__API_KEYS and GATEWAY__ADMIN__API_KEYS; it names what is missing.
# Other subcommands: `docker run --rm activity-gateway migrate`, `... token --sub wallet-1`.

# ---- build ---------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# The release profile keeps line tables (debug = 1) for profiling; the image does not need them.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin activity-gateway \
 && install -m 0755 target/release/activity-gateway /usr/local/bin/activity-gateway

# ---- runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home \
        --home-dir /var/lib/activity-gateway --shell /usr/sbin/nologin gateway \
 && install -d -o gateway -g gateway -m 0750 /var/lib/activity-gateway
COPY --from=builder /usr/local/bin/activity-gateway /usr/local/bin/activity-gateway

# Listen on all interfaces inside the container; keep the embedded SQLite history in the data
# directory (mount a volume there, or set GATEWAY__STORAGE__URL=postgres://... for a cluster).
ENV GATEWAY__SERVER__LISTEN=0.0.0.0:8080 \
    GATEWAY__STORAGE__URL=sqlite:///var/lib/activity-gateway/gateway.db
WORKDIR /var/lib/activity-gateway
USER 10001:10001
EXPOSE 8080

# Liveness without curl: bash (always present in Debian) speaks HTTP/1.0 over /dev/tcp.
# The port is the one set in GATEWAY__SERVER__LISTEN above; change both together.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# SIGTERM starts the drain (server.drain_window, default 10 s; exit 0 after at most the window
# + 2 s): give the container a stop timeout above that (docker stop -t 20, stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/activity-gateway"]
CMD ["serve"]
