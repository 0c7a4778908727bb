# syntax=docker/dockerfile:1
#
# Token Service container image.
#
#   docker build -t token-service .
#   docker run --rm -p 8080:8080 -e TOKEN_AUDIENCE=demo -e TOKEN_ISSUER=http://127.0.0.1:8080 token-service
#
# The build stage compiles a statically linked release binary (musl libc with crt-static: no
# shared library, no dynamic loader, and musl's own DNS resolver instead of glibc's NSS plug-ins).
# The final image is `scratch` holding only what the binary needs:
#   /usr/local/bin/token-service       the binary (stripped)
#   /etc/ssl/certs/ca-certificates.crt CA certificates: outbound TLS to Google (metadata aside)
#                                      uses reqwest with rustls and the platform verifier, which
#                                      reads this bundle; without it the service refuses to start
#                                      ("cannot build the HTTP client")
#   /etc/passwd, /etc/group            name the numeric user 65532 for tools that look it up
#   /data                              owned by 65532: DATA_DIR, only written when SIGNER=local
#                                      runs without SIGNING_KEY_FILE (development key) or by `demo`
# It runs as the numeric non-root user 65532, so Kubernetes' runAsNonRoot can verify it.
# deploy/cloud-run.yaml and deploy/kubernetes.yaml run this image; tests/deploy.rs checks this file.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# musl targets link statically by default; +crt-static says so explicitly.
ENV RUSTFLAGS="-C target-feature=+crt-static"
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --target "$target" -p token-service --bin token-service \
 && install -D -m 0555 "target/$target/release/token-service" /rootfs/usr/local/bin/token-service
RUN strip /rootfs/usr/local/bin/token-service \
 && if readelf -l /rootfs/usr/local/bin/token-service | grep -q 'program interpreter'; then \
      echo 'token-service is not statically linked' >&2; exit 1; \
    fi \
 && /rootfs/usr/local/bin/token-service --version \
 && install -D -m 0444 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\ntoken-service:x:65532:65532:Token Service:/data:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\ntoken-service:x:65532:\n' > /rootfs/etc/group \
 && install -d -m 0700 -o 65532 -g 65532 /rootfs/data

FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
# Inside a container the service must listen on every interface to be reachable at all.
ENV BIND_ADDRESS=0.0.0.0 \
    DATA_DIR=/data
EXPOSE 8080
LABEL org.opencontainers.image.title="Token Service" \
      org.opencontainers.image.description="Token broker: verified client certificates in, OIDC ID tokens (and Google access tokens) out" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/token-service"]
CMD ["serve"]
