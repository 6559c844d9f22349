# Container image for codepipeline-gateway.
#
# Build:  docker build -t codepipeline-gateway:0.1.0 .
# The project's own machines have no Docker engine, so this file has not been
# built there; it runs the same cargo command as the README's build.

# --- build: the official Rust image (Debian bookworm) -------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: the gateway crate, emulator/ (a workspace member),
# proto/ and build.rs (protos are compiled with protox: no protoc needed).
COPY . .
# The release profile is fat LTO in one codegen unit: about 17 minutes on 2 cores.
RUN cargo build --release --locked

# --- runtime: distroless glibc image, no shell, no package manager ------------
# cc-debian12 matches the build stage's glibc (bookworm = Debian 12).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/codepipeline-gateway /usr/local/bin/codepipeline-gateway
# 65532 is distroless's "nonroot" user; the Helm chart runs as the same uid.
USER 65532:65532
# gRPC (JobWorkerService, health, reflection) and admin HTTP (/metrics).
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/codepipeline-gateway"]
CMD ["serve"]
