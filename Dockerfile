# agentwall container image: multi-stage build, small non-root runtime.
# Build: docker build -t agentwall .
# Run:   docker run -p 8080:8080 -p 9090:9090 -e AGENTWALL_ADMIN_TOKEN=... \
#          -v $PWD/policies:/etc/agentwall/policies:ro -v $PWD/agents.pem:/etc/agentwall/agents.pem:ro \
#          -v agentwall-data:/var/lib/agentwall agentwall

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin agentwall \
 && strip target/release/agentwall

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/agentwall --shell /usr/sbin/nologin agentwall \
 && mkdir -p /etc/agentwall/policies /var/lib/agentwall \
 && chown -R agentwall:agentwall /var/lib/agentwall
COPY --from=build /src/target/release/agentwall /usr/local/bin/agentwall
COPY conf/production.toml /etc/agentwall/agentwall.toml
COPY policies/ /etc/agentwall/policies/

USER agentwall
WORKDIR /var/lib/agentwall
ENV AGENTWALL_CONFIG=/etc/agentwall/agentwall.toml
EXPOSE 8080 9090
VOLUME ["/etc/agentwall/policies", "/var/lib/agentwall"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9090/health || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/agentwall"]
CMD ["run", "--log-format", "json"]
