//! Ownership proofs for load runs (`[load] ownership_token`).
//!
//! `allowed_hosts` says where the coordinator's admins may send load; it
//! cannot tell whether the target's owner agrees. With an ownership token
//! configured, every host a run targets must publish the proof string
//! `vantage-load=<token>` before **every** run, in one of two places (as
//! ACME's HTTP-01 and DNS-01 challenges do):
//!
//! - a TXT record at `_vantage-load.<host>` (host names only), or
//! - the file `/.well-known/vantage-load.txt` at each origin the run uses
//!   (`scheme://host:port`, answered with 200, redirects not followed).
//!
//! A host that proves neither refuses the whole run before any agent is
//! asked, with what was looked up and why it failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::Resolver;
use vantage_agent::egress::EgressPolicy;
use vantage_agent::load::file::LoadPlan;
use vantage_agent::probe::http::HttpProbe;
use vantage_agent::probe::Probe;
use vantage_proto::spec::HttpSpec;

/// Deadline of each lookup and each fetch.
pub const PROOF_TIMEOUT: Duration = Duration::from_secs(5);
/// The path of the proof file.
pub const PROOF_PATH: &str = "/.well-known/vantage-load.txt";
/// The label before the host of the TXT record.
pub const TXT_LABEL: &str = "_vantage-load";

/// What must be published: `vantage-load=<token>`.
pub fn proof_string(token: &str) -> String {
    format!("vantage-load={token}")
}

/// Checks that every host of `plan` publishes the proof for `token`, with
/// TXT lookups at `dns_server` (default: the system's resolver). `Err` holds
/// the message for the user.
pub async fn verify(
    plan: &LoadPlan,
    token: &str,
    dns_server: Option<SocketAddr>,
) -> Result<(), String> {
    let proof = proof_string(token);
    let mut hosts: Vec<(String, Vec<url::Url>)> = Vec::new();
    for r in plan.scenarios.iter().flat_map(|s| &s.requests) {
        let Some(host) = r.url.host_str() else {
            continue;
        };
        let mut origin = r.url.clone();
        origin.set_path(PROOF_PATH);
        origin.set_query(None);
        origin.set_fragment(None);
        match hosts.iter_mut().find(|(h, _)| h == host) {
            Some((_, urls)) if !urls.contains(&origin) => urls.push(origin),
            Some(_) => {}
            None => hosts.push((host.to_owned(), vec![origin])),
        }
    }
    for (host, urls) in &hosts {
        let dns = match url::Host::parse(host) {
            Ok(url::Host::Domain(name)) => match txt_has(&name, &proof, dns_server).await {
                Ok(()) => continue,
                Err(why) => Some(why),
            },
            _ => None,
        };
        let mut failures = Vec::new();
        for url in urls {
            if let Err(why) = file_has(url, &proof).await {
                failures.push(format!("{url}: {why}"));
            }
        }
        if failures.is_empty() {
            continue;
        }
        let mut message = format!(
            "load.ownership_token: {host} did not prove ownership: publish \"{proof}\" in "
        );
        if let Some(why) = dns {
            message.push_str(&format!("a TXT record at {TXT_LABEL}.{host} ({why}) or "));
        }
        message.push_str(&format!("{} ({})", PROOF_PATH, failures.join("; ")));
        return Err(message);
    }
    Ok(())
}

/// Whether a TXT record of `_vantage-load.<name>` holds `proof`.
async fn txt_has(name: &str, proof: &str, server: Option<SocketAddr>) -> Result<(), String> {
    let provider = TokioRuntimeProvider::default();
    let builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            ns.connections = vec![udp, tcp];
            Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), provider)
        }
        None => Resolver::builder(provider).map_err(|e| format!("no resolver: {e}"))?,
    };
    let mut builder = builder;
    builder.options_mut().timeout = PROOF_TIMEOUT;
    builder.options_mut().attempts = 1;
    let resolver = builder.build().map_err(|e| format!("no resolver: {e}"))?;
    let fqdn = format!("{TXT_LABEL}.{}.", name.trim_end_matches('.'));
    let lookup = tokio::time::timeout(PROOF_TIMEOUT * 2, resolver.txt_lookup(fqdn))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    let found = lookup.answers().iter().any(|record| match &record.data {
        RData::TXT(txt) => {
            // A TXT record may split a string into chunks: join them.
            let text: Vec<u8> = txt
                .txt_data
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect();
            text == proof.as_bytes()
        }
        _ => false,
    });
    if found {
        Ok(())
    } else {
        Err("no matching record".into())
    }
}

/// Whether `url` answers 200 with a body containing `proof`.
async fn file_has(url: &url::Url, proof: &str) -> Result<(), String> {
    let mut spec = HttpSpec::get(url.clone());
    spec.follow_redirects = false;
    spec.expect_status = vec![200];
    spec.body_contains = Some(proof.to_owned());
    // The coordinator fetches on its own behalf, like its alert channels.
    let probe = HttpProbe::new(spec, PROOF_TIMEOUT, Arc::new(EgressPolicy::unrestricted()))
        .map_err(|e| e.to_string())?;
    match probe.run().await.error {
        None => Ok(()),
        Some(e) => Err(e.to_string()),
    }
}
