//! Generates the gRPC code from `proto/*.proto` without a system `protoc`:
//! protox (a protobuf compiler in Rust) makes the descriptor set, and
//! tonic-prost-build turns it into messages, clients and servers.

fn main() {
    let protos = ["proto/emoji.proto", "proto/voting.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = match protox::compile(protos, ["proto"]) {
        Ok(d) => d,
        Err(e) => panic!("the .proto files do not compile: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure().compile_fds(descriptors) {
        panic!("generating the gRPC code failed: {e}");
    }
}
