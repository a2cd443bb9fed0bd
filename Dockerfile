# For people who prefer `docker build` / `podman build`. The xtask is the
# builder stage: build the static binary first, then package it.
#
#   cargo xtask dist --target x86_64
#   podman build -t app:dev .                     # or docker build
#   podman build -t app:dev --build-arg TARGET=aarch64-unknown-linux-musl --platform linux/arm64 .
#
# `cargo xtask image` builds the same image for every platform at once,
# without a daemon, with a reproducible digest.
FROM scratch
ARG TARGET=x86_64-unknown-linux-musl
COPY image/passwd image/group /etc/
COPY config/ /app/config/
COPY target/dist/${TARGET}/app /usr/local/bin/app
USER 65532:65532
WORKDIR /app
ENV APP_ENV=prod PATH=/usr/local/bin
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/app"]
