//! Network namespaces for the network-fault tests (they need root and `ip`,
//! from iproute2; `.ci/run` installs it).
//!
//! [`Netns`]: a namespace joined to the host by a veth pair, whose link can be
//! black-holed with `blackhole` routes (packets vanish, no error reaches
//! either process).
//!
//! [`EmulatedLink`]: a namespace behind a slow, lossy link. This machine's
//! kernel has no `sch_netem`, so `tc netem` cannot add delay or loss: the
//! namespace gets a TUN device as its only link (its default route), the
//! twin device sits in the host namespace, and `tests/linkem.py` carries the
//! IP packets between them, dropping each with probability `loss` and
//! delivering the rest after `delay ± jitter`. The kernels on both sides see
//! a real link: TCP retransmits, HTTP/2 keepalive, everything is real.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::support::*;

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace `vt<n>` with a veth pair: `10.231.<n>.1` (the coordinator's
/// side) and `10.231.<n>.3` (a target's) on the host side, `10.231.<n>.2`
/// inside. Removed on drop.
pub struct Netns {
    pub name: String,
    host_if: String,
    subnet: u8,
}

/// `ip ARGS` inside network namespace `ns`.
pub fn ip_in(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all);
}

/// Namespaces made by this process, so tests running at once get their own.
static CREATED: AtomicU32 = AtomicU32::new(0);

impl Netns {
    pub fn create() -> Netns {
        let k = CREATED.fetch_add(1, Ordering::Relaxed);
        let n = ((std::process::id().wrapping_mul(7).wrapping_add(k)) % 200) as u8 + 20;
        let name = format!("vt{n}");
        let host_if = format!("vt{n}h");
        let ns_if = format!("vt{n}n");
        // Leftovers of an aborted run with the same number are removed first.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("10.231.{n}.1/29"), "dev", &host_if]);
        ip(&["addr", "add", &format!("10.231.{n}.3/29"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip_in(
            &name,
            &["addr", "add", &format!("10.231.{n}.2/29"), "dev", &ns_if],
        );
        ip_in(&name, &["link", "set", &ns_if, "up"]);
        ip_in(&name, &["link", "set", "lo", "up"]);
        Netns {
            name,
            host_if,
            subnet: n,
        }
    }

    pub fn host_ip(&self) -> String {
        format!("10.231.{}.1", self.subnet)
    }

    pub fn ns_ip(&self) -> String {
        format!("10.231.{}.2", self.subnet)
    }

    /// A host-side address that stays reachable when only the coordinator's
    /// is cut ([`Netns::cut_coordinator`]).
    pub fn target_ip(&self) -> String {
        format!("10.231.{}.3", self.subnet)
    }

    /// Drops, inside the namespace, every packet to the coordinator's
    /// address (the host's replies and the target stay reachable, but no
    /// TCP exchange with the coordinator completes).
    pub fn cut_coordinator(&self, op: &str) {
        ip_in(
            &self.name,
            &["route", op, "blackhole", &format!("{}/32", self.host_ip())],
        );
    }

    /// Drops every packet between the two sides, silently.
    pub fn black_hole(&self) {
        self.blackhole_routes("add");
    }

    pub fn heal(&self) {
        self.blackhole_routes("del");
    }

    /// Adds or deletes a `blackhole` route to the other side, on each side.
    fn blackhole_routes(&self, op: &str) {
        let (to_ns, to_host) = (
            format!("{}/32", self.ns_ip()),
            format!("{}/32", self.host_ip()),
        );
        ip(&["route", op, "blackhole", &to_ns]);
        ip_in(&self.name, &["route", op, "blackhole", &to_host]);
    }

    /// The namespace's own resolver config (`ip netns exec` mounts
    /// `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf`).
    pub fn resolv_conf(&self, text: &str) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/resolv.conf"), text).unwrap();
    }

    /// An agent inside the namespace, its log in `log`.
    pub fn start_agent(
        &self,
        grpc: SocketAddr,
        (region, name): (&str, &str),
        spool: &Path,
        log: &Path,
        extra: &[&str],
    ) -> Proc {
        let stderr = std::fs::File::create(log).unwrap();
        let child = agent_command_in(Some(&self.name), grpc, region, name, spool)
            .args(extra)
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawning the agent in its namespace");
        Proc { child, spool: None }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["route", "del", "blackhole", &format!("{}/32", self.ns_ip())])
            .output();
    }
}

/// What the link does to each packet, both directions.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    pub delay: Duration,
    pub jitter: Duration,
    /// Probability of dropping a packet, 0..1.
    pub loss: f64,
}

/// Namespace `vl<n>` whose default route is the emulated link; the host
/// side is `10.232.<n>.1`, the namespace side `10.232.<n>.2`. Everything is
/// removed on drop.
pub struct EmulatedLink {
    pub ns: String,
    subnet: u8,
    host_tun: String,
    emulator: Proc,
}

impl EmulatedLink {
    pub fn create(impairment: Impairment, seed: u64) -> EmulatedLink {
        static CREATED: AtomicU32 = AtomicU32::new(0);
        let k = CREATED.fetch_add(1, Ordering::Relaxed);
        let n = ((std::process::id().wrapping_mul(11).wrapping_add(k)) % 200) as u8 + 20;
        let ns = format!("vl{n}");
        let (ns_tun, host_tun) = (format!("vl{n}a"), format!("vl{n}b"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_tun]).output();
        ip(&["netns", "add", &ns]);
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/linkem.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--a", &ns_tun, "--b", &host_tun])
            .args(["--delay-ms", &impairment.delay.as_millis().to_string()])
            .args(["--jitter-ms", &impairment.jitter.as_millis().to_string()])
            .args(["--loss", &impairment.loss.to_string()])
            .args(["--seed", &seed.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting tests/linkem.py");
        let mut ready = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "linkem.py did not start");
        let emulator = Proc { child, spool: None };
        // The device keeps its open file when it moves to the namespace.
        ip(&["link", "set", &ns_tun, "netns", &ns]);
        let (host_ip, ns_ip) = (format!("10.232.{n}.1"), format!("10.232.{n}.2"));
        ip_in(
            &ns,
            &["addr", "add", &ns_ip, "peer", &host_ip, "dev", &ns_tun],
        );
        ip_in(&ns, &["link", "set", &ns_tun, "up"]);
        ip_in(&ns, &["link", "set", "lo", "up"]);
        ip_in(&ns, &["route", "add", "default", "dev", &ns_tun]);
        ip(&["addr", "add", &host_ip, "peer", &ns_ip, "dev", &host_tun]);
        ip(&["link", "set", &host_tun, "up"]);
        EmulatedLink {
            ns,
            subnet: n,
            host_tun,
            emulator,
        }
    }

    /// The host's address on the link.
    pub fn host_ip(&self) -> String {
        format!("10.232.{}.1", self.subnet)
    }

    /// Stops the emulator; packets (delivered, dropped) over both
    /// directions.
    pub fn stop(&mut self) -> (u64, u64) {
        terminate("linkem.py", &mut self.emulator, Duration::from_secs(10));
        let mut line = String::new();
        BufReader::new(self.emulator.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let sum = |field: &str| {
            ["a2b", "b2a"]
                .iter()
                .map(|d| v[d][field].as_u64().unwrap())
                .sum()
        };
        (sum("delivered"), sum("dropped"))
    }
}

impl Drop for EmulatedLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_tun])
            .output();
    }
}
