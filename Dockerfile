# The tandem image: one binary for the control plane, the failover
# controller, the service mirror and the gateway.
#
#   docker build -t ghcr.io/tandem-io/tandem:$(cargo pkgid -p tandem | cut -d@ -f2) .
#
# It needs a container engine, which the development machines of this
# project do not have: the image is not built or tested here.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Only the product binary: the development tools (tandem-testbed,
# tandem-demo) stay out of the image.
RUN cargo build --release --locked -p tandem --bin tandem && \
    install -D target/release/tandem /out/tandem

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tandem /usr/local/bin/tandem
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tandem"]
