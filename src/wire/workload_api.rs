//! The SPIFFE Workload API's messages and gRPC service, generated at build
//! time from `proto/workload.proto` (see `build.rs`).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("_");
