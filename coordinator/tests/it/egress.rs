//! The agent's egress policy on a real network (issue 6): an agent in its own
//! network namespace is given checks and a load run aimed at loopback written
//! many ways, at the metadata address 169.254.169.254, at a name that
//! resolves to a private address, and at an allowed host that redirects to a
//! private address. Every one is refused, and an nftables counter on the
//! victim port inside the namespace shows 0 packets. Controls: the allowed
//! host is reached (its counter moves), and an operator's one-shot probe of
//! the victim moves the victim's counter, so a 0 means nothing was sent.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::netns::{ip_in, Netns};
use crate::support::*;

/// `nft ARGS` inside `ns`.
fn nft_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .output()
        .expect("running nft (nftables; .ci/run installs it)");
    assert!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Counts, in `ns`'s output hook, the TCP packets sent to each of `ports`
/// (on any address: loopback, the metadata address, the veth).
fn count_packets_to(ns: &str, ports: &[u16]) {
    nft_in(ns, &["add", "table", "inet", "vantage_egress"]);
    nft_in(
        ns,
        &[
            "add",
            "chain",
            "inet",
            "vantage_egress",
            "out",
            "{ type filter hook output priority 0; }",
        ],
    );
    for port in ports {
        nft_in(
            ns,
            &[
                "add",
                "rule",
                "inet",
                "vantage_egress",
                "out",
                "tcp",
                "dport",
                &port.to_string(),
                "counter",
            ],
        );
    }
}

/// Packets counted so far to `port`.
fn packets_to(ns: &str, port: u16) -> u64 {
    let json: Value = serde_json::from_str(&nft_in(
        ns,
        &["-j", "list", "chain", "inet", "vantage_egress", "out"],
    ))
    .unwrap();
    json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["rule"]["expr"].as_array())
        .filter(|expr| expr[0]["match"]["right"] == u64::from(port))
        .map(|expr| expr[1]["counter"]["packets"].as_u64().unwrap())
        .next()
        .unwrap_or_else(|| panic!("no counter for port {port}: {json}"))
}

/// An allowed host on the host side of the veth: `/redirect` sends the
/// client to `location`, anything else answers 200.
async fn redirector(ip: &str, location: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tokio::time::timeout(Duration::from_secs(300), async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = tcp.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let reply = if head.starts_with("GET /redirect ") {
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n".into()
                };
                let _ = tcp.write_all(reply.as_bytes()).await;
            });
        }
    }));
    addr
}

/// The check's summary for region `eu`.
async fn eu(http: SocketAddr, check: &str) -> Value {
    let view = get_json(http, &format!("/api/v1/checks/{check}")).await;
    view["regions"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["region"] == "eu").cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_and_load_aimed_at_non_public_addresses_send_no_packet() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create();
    // Inside the namespace: the metadata address and a private one (both on
    // its loopback device), and a name for the private one.
    ip_in(
        &ns.name,
        &["addr", "add", "169.254.169.254/32", "dev", "lo"],
    );
    ip_in(&ns.name, &["addr", "add", "10.77.0.1/32", "dev", "lo"]);
    let etc = format!("/etc/netns/{}", ns.name);
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        format!("{etc}/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n10.77.0.1 internal.vantage.test\n",
    )
    .unwrap();

    // The victim: an HTTP server inside the namespace on every address.
    let victim = free_port();
    let _victim = Proc {
        child: Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-m", "http.server"])
            .args([&victim.to_string(), "--bind", "::", "--directory"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        spool: None,
    };
    let allowed = redirector(
        &ns.target_ip(),
        format!("http://internal.vantage.test:{victim}/"),
    )
    .await;
    let allowed_private = redirector(&ns.target_ip(), format!("http://10.77.0.1:{victim}/")).await;
    count_packets_to(&ns.name, &[victim, allowed.port(), allowed_private.port()]);

    let http_checks = [
        ("dotted-short", format!("http://127.1:{victim}/")),
        ("decimal", format!("http://2130706433:{victim}/")),
        ("hex", format!("http://0x7f000001:{victim}/")),
        ("v6-loopback", format!("http://[::1]:{victim}/")),
        ("v4-mapped", format!("http://[::ffff:127.0.0.1]:{victim}/")),
        (
            "metadata",
            format!("http://169.254.169.254:{victim}/latest/meta-data/"),
        ),
        (
            "private-name",
            format!("http://internal.vantage.test:{victim}/"),
        ),
        ("redirect-to-name", format!("http://{allowed}/redirect")),
        (
            "redirect-to-private",
            format!("http://{allowed_private}/redirect"),
        ),
    ];
    let mut checks = String::new();
    for (name, url) in &http_checks {
        checks.push_str(&format!(
            "[[check]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{url}\"\nregions = [\"eu\"]\ninterval = \"1s\"\ntimeout = \"900ms\"\n\n"
        ));
    }
    checks.push_str(&format!(
        "[[check]]\nname = \"tcp-dotted\"\nkind = \"tcp\"\nhost = \"127.1\"\nport = {victim}\nregions = [\"eu\"]\ninterval = \"1s\"\ntimeout = \"900ms\"\n\n\
         [[check]]\nname = \"tls-decimal\"\nkind = \"tls\"\nhost = \"2130706433\"\nserver_name = \"victim.test\"\nport = {victim}\nregions = [\"eu\"]\ninterval = \"1s\"\ntimeout = \"900ms\"\n\n\
         [[check]]\nname = \"allowed-host\"\nkind = \"http\"\nurl = \"http://{allowed}/ok\"\nregions = [\"eu\"]\ninterval = \"1s\"\ntimeout = \"900ms\"\n\n"
    ));
    let config = write_config(
        dir.path(),
        &format!(
            r#"version = 1

[server]
grpc_listen = "{host}:{grpc}"
http_listen = "127.0.0.1:0"
data_dir = "data"
window = "1s"
{tls}{agents}
[load]
max_rate = 100
max_vus = 5

{checks}"#,
            host = ns.host_ip(),
            grpc = free_port(),
            // Off loopback: TLS and an agent token are required.
            tls = tls_toml(dir.path(), &[ns.host_ip().parse().unwrap()]),
            agents = agents_toml(&[("agent-egress", "eu")]),
        ),
    );
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);
    let log = dir.path().join("agent.log");
    let mut agent = agent_command_in(
        Some(&ns.name),
        grpc,
        "eu",
        "agent-egress",
        &dir.path().join("spool"),
    );
    // Only the two allowed hosts are opened; loopback and the rest of
    // 10.0.0.0/8 stay refused.
    agent.env(EGRESS_ALLOW_ENV, format!("{}/32", ns.target_ip()));
    let _agent = Proc {
        child: agent
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
        spool: None,
    };

    // Every refused check has at least three attempts, all failed with class
    // `egress`; the allowed host's check succeeds.
    let refused: Vec<&str> = http_checks
        .iter()
        .map(|(n, _)| *n)
        .chain(["tcp-dotted", "tls-decimal"])
        .collect();
    let settled = eventually(Duration::from_secs(60), || async {
        for name in refused.iter().chain(&["allowed-host"]) {
            let r = eu(http, name).await;
            if r["attempts"].as_u64().unwrap_or(0) < 3 {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "not every check ran 3 times in 60 s; agent log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for name in &refused {
        let r = eu(http, name).await;
        let attempts = r["attempts"].as_u64().unwrap();
        assert_eq!(
            r["errors"]["egress"].as_u64(),
            Some(attempts),
            "{name}: every attempt refused by the egress policy: {r}"
        );
    }
    let control = eu(http, "allowed-host").await;
    assert_eq!(control["errors"], serde_json::json!({}), "{control}");

    // A load run at loopback: accepted by the coordinator (loopback is on its
    // allow-list) and refused by the agent before any request.
    let file = format!(
        "[[scenario]]\nname = \"s\"\nexecutor = \"constant-arrival-rate\"\nrate = 20\nduration = \"2s\"\npreAllocatedVUs = 2\n\n[[scenario.request]]\nurl = \"http://127.1:{victim}/\"\n"
    );
    let body = serde_json::json!({ "file": file, "regions": ["eu"] }).to_string();
    let (status, text) = http_request(
        http,
        "POST",
        "/api/v1/loadtests",
        Some(&body),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = loadtest_result(http, &id).await;
    assert_eq!(run["state"], "error", "{run}");
    assert!(
        run.to_string().contains("refused by the egress policy"),
        "{run}"
    );

    // Not one packet reached the victim port; the allowed hosts were reached.
    assert_eq!(packets_to(&ns.name, victim), 0, "packets to the victim");
    assert!(packets_to(&ns.name, allowed.port()) > 0);
    assert!(packets_to(&ns.name, allowed_private.port()) > 0);

    // The counter's control: the operator's own one-shot probe (no egress
    // policy) does reach the victim, and the counter sees it.
    let probe = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(agent_bin())
        .args(["probe", &format!("http://127.0.0.1:{victim}/"), "--json"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stdout)
    );
    assert!(packets_to(&ns.name, victim) > 0, "the counter counts");
}
