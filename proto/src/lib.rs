//! The Vantage wire and check contract, shared by the agent and the coordinator.
//!
//! # Layout
//! - [`v1`]: the gRPC messages and the `Fleet` service, generated from
//!   `proto/vantage/v1/fleet.proto` and checked in (see `tests/bootstrap.rs`).
//! - [`build_info`]: version, commit and compiler of this build, and the
//!   version compatibility rule between agents and coordinator.
//! - [`histogram`]: the HdrHistogram V2 + deflate codec used for every latency
//!   histogram on the wire, with input limits.
//! - [`spec`]: typed, validated check specifications and their conversion to and
//!   from the wire.
//! - [`threshold`]: k6 threshold expressions.
//! - [`toml_reader`]: a TOML reader that reports every error with its line,
//!   column and key path (coordinator config, agent load files).
#![deny(missing_docs)]

/// Generated protobuf messages and tonic service for `vantage.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!("generated/vantage.v1.rs");
}

pub mod build_info;
pub mod histogram;
pub mod spec;
pub mod threshold;
pub mod toml_reader;

/// Largest gRPC message either side accepts, in bytes (shared/RELIABILITY.md §3:
/// smaller than tonic's 4 MiB default; agents split batches below it).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Checks whether `name` is a valid agent, region or check name:
/// 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
