//! Compiles `proto/tinyurl/v1/*.proto` with the pure-Rust `protox` compiler, so
//! building needs no system `protoc`, and writes the encoded file descriptor set
//! next to the generated code for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let proto_dir = proto_root.join("tinyurl/v1");

    let mut proto_files = Vec::new();
    for entry in std::fs::read_dir(&proto_dir)? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "proto")
        {
            proto_files.push(path);
        }
    }
    // Sorted so the generated code and descriptor do not depend on directory order.
    proto_files.sort();

    println!("cargo:rerun-if-changed={}", proto_dir.display());
    for file in &proto_files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let file_descriptors = protox::compile(&proto_files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("tinyurl_descriptor.bin"),
        file_descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(file_descriptors)?;
    Ok(())
}
