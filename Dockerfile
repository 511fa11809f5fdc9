# Builds both planes into one slim image; docker-compose picks the binary per service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p control-plane -p data-plane

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/gateway --create-home gateway
COPY --from=build /src/target/release/control-plane /src/target/release/data-plane /usr/local/bin/
COPY --from=build /src/templates /usr/share/gateway/templates
COPY --from=build /src/static /usr/share/gateway/static
USER gateway
WORKDIR /var/lib/gateway
EXPOSE 7000 8000
CMD ["data-plane"]
