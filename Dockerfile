# The tandem image: one binary for the control plane, the failover
# controller, the service mirror, the gateway, the proxy and its init
# container (proxy-init), and the CNI plugin's installer.
#
#   docker build -t ghcr.io/tandem-io/tandem:$(cargo pkgid -p tandem | cut -d@ -f2) .
#
# It needs a container engine, which the development machines of this
# project do not have: the image is not built or tested here. The testbed
# builds the same layout without one (crates/testbed/src/image/images.rs):
# the binary at /tandem (injected pods and the tandem-cni DaemonSet run
# /tandem), and Debian's iptables in nft mode for proxy-init.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Only the product binary: the development tools (tandem-testbed,
# tandem-demo) stay out of the image.
RUN cargo build --release --locked -p tandem --bin tandem && \
    install -D target/release/tandem /out/tandem

FROM debian:bookworm-slim
RUN apt-get update && \
    apt-get install -y --no-install-recommends iptables && \
    rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tandem /tandem
USER 65532:65532
ENTRYPOINT ["/tandem"]
