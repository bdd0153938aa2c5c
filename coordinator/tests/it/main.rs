//! One integration-test binary for the coordinator (shared/STYLE.md, Tests).
//! The end-to-end tests run the real `vantage-coordinator` and `vantage-agent`
//! binaries as separate processes against real targets on loopback.

mod across_regions;
mod agent_kills;
mod alerts;
mod api_auth;
mod audit_checks;
mod channels;
mod config;
mod crash;
mod dashboard;
mod deploy;
mod e2e;
mod egress;
mod email;
mod fuzz_corpus;
mod grpc_input;
mod history;
mod honesty;
mod loadtests;
mod metrics;
mod netfault;
mod netns;
mod ownership;
mod reload;
mod slack_receiver;
mod smtp;
mod spool;
mod support;
mod three_regions;
mod tls;
