//! One integration-test binary for the agent: the real `vantage-agent` binary
//! against real servers on loopback.

mod audit_cli;
mod audit_email_dns;
mod dns;
mod load;
mod probe_cli;
