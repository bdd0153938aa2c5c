//! The Vantage coordinator: assigns checks to agents, stores their histograms,
//! evaluates thresholds and serves the API.
//!
//! # Layout
//! - [`config`]: the TOML config file, validated with line/column errors.

pub mod config;
