//! The `tinyurl.v1` protobuf package: messages, tonic clients and servers, and
//! the encoded file descriptor set that servers register for reflection.

/// Generated code for the `tinyurl.v1` package.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("tinyurl.v1");
}

/// Encoded `FileDescriptorSet` of every file in `proto/`, for
/// `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tinyurl_descriptor.bin"));
