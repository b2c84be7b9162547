//! Code generated from `proto/lb.proto` (package `rollout.lb`) by build.rs.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("rollout.lb");

/// `proto/lb.proto` as an encoded `FileDescriptorSet` (with its comments), for server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lb_descriptor");
