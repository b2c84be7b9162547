//! Code generated from `proto/lb.proto` (package `rollout.lb`) by build.rs.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("rollout.lb");
