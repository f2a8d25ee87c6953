# syntax=docker/dockerfile:1
#
# The stephost daemon in a container: built from source in a Rust image,
# run from a slim Debian image as a non-root user, with the data dir on a
# volume. docs/deployment.md ("Run it in a container") explains it.
#
# Build:
#   docker build -t stephost .
# Run (set --public-url to the https URL partners call back on):
#   docker run -d --name stephost -p 127.0.0.1:8080:8080 \
#     -v stephost-data:/var/lib/stephost \
#     stephost --public-url https://steps.example.com
# Arguments after the image name are added to
#   stephost serve --listen 0.0.0.0:8080 --data-dir /var/lib/stephost

ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# rust-toolchain.toml pins the toolchain and the wasm32-wasip2 target (the
# reference plugins are compiled to it and embedded in the binary).
# Install both first, so this layer is reused while only sources change.
COPY rust-toolchain.toml ./
RUN rustup toolchain install && rustup target add wasm32-wasip2
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies
# between builds; the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p stephost --locked \
    && install -m 0755 target/release/stephost /stephost

FROM ${RUNTIME_IMAGE}
# A fixed uid/gid, so a bind-mounted data dir can be given to it:
#   chown -R 10001:10001 /srv/stephost-data && chmod 700 /srv/stephost-data
RUN groupadd --system --gid 10001 stephost \
    && useradd --system --uid 10001 --gid stephost --no-create-home \
       --home-dir /var/lib/stephost --shell /usr/sbin/nologin stephost \
    && install -d -m 0700 -o stephost -g stephost /var/lib/stephost
COPY --from=build /stephost /usr/local/bin/stephost
USER stephost:stephost
# The data dir: executions, callbacks, timers, API token hashes, the
# callback-ticket key and the compiled-component cache. Keep it on a volume.
VOLUME ["/var/lib/stephost"]
EXPOSE 8080
# SIGTERM stops the daemon gracefully within shutdown_grace_ms (10 s by
# default): give `docker stop` more than that (docker stop -t 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["stephost", "serve", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/stephost"]
