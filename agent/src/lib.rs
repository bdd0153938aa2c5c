//! The Vantage agent: runs HTTP, TCP and TLS checks and reports their outcomes.
//!
//! # Layout
//! - [`probe`]: one runtime per check kind, behind the `Probe` trait.
//! - [`oneshot`]: `vantage-agent probe TARGET`, one check run now and rendered
//!   as text or JSON.
#![warn(missing_docs)]

pub mod oneshot;
pub mod probe;
