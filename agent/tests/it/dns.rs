//! A real DNS server for the audit tests: dnsmasq (Debian package
//! dnsmasq-base) on loopback, answering only the records it is given, with
//! NXDOMAIN for any other name under `.test`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq, stopped on drop.
pub struct Dnsmasq {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One record to serve.
pub enum Rr<'a> {
    /// TXT `name` with one string.
    Txt(&'a str, &'a str),
    /// MX of `name`: exchange and preference (`"."` is a null MX).
    Mx(&'a str, &'a str, u16),
}

impl Dnsmasq {
    /// Starts dnsmasq on 127.0.0.1 (a free port) serving `records`; returns
    /// once it accepts TCP connections. The port is free for UDP when
    /// chosen, but another test may hold it for TCP (or take it before
    /// dnsmasq binds): dnsmasq then exits, and a new port is tried, up to
    /// five times.
    pub fn start(records: &[Rr<'_>]) -> Dnsmasq {
        let mut failed = Vec::new();
        for _ in 0..5 {
            match Self::try_start(records) {
                Ok(dns) => return dns,
                Err(port) => failed.push(port),
            }
        }
        panic!("dnsmasq did not start on any of the ports {failed:?}");
    }

    /// One attempt on one free port: `Err(port)` when dnsmasq exited.
    fn try_start(records: &[Rr<'_>]) -> Result<Dnsmasq, u16> {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--conf-file=/dev/null",
            "--user=root",
            "--local=/test/",
        ])
        .arg(format!("--port={port}"))
        .arg(format!(
            "--pid-file={}",
            dir.path().join("dnsmasq.pid").display()
        ));
        for rr in records {
            match rr {
                // dnsmasq splits the text into strings at commas (and keeps
                // quotes): test records hold no comma.
                Rr::Txt(name, text) => {
                    assert!(!text.contains(','), "{text}");
                    cmd.arg(format!("--txt-record={name},{text}"))
                }
                Rr::Mx(name, host, pref) => cmd.arg(format!("--mx-host={name},{host},{pref}")),
            };
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (dnsmasq-base; .ci/run installs it)");
        let mut dns = Dnsmasq {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if dns.child.try_wait().unwrap().is_some() {
                return Err(port);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "dnsmasq did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The listener that answered may be another test's on the same port,
        // with dnsmasq about to exit for want of it.
        std::thread::sleep(Duration::from_millis(100));
        if dns.child.try_wait().unwrap().is_some() {
            return Err(port);
        }
        Ok(dns)
    }

    /// `127.0.0.1:PORT`, as `--dns-server` takes it.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A DKIM public key record (the key need not be real: only its presence
/// is checked).
pub const DKIM_KEY: &str = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP";

/// Every record a well-configured mail domain `d` publishes, with `spf` as
/// its SPF record; a test leaves out or replaces one to make a defect.
pub fn mail_domain(d: &str, spf: &str) -> Vec<(String, String, Kind)> {
    vec![
        (d.to_owned(), spf.to_owned(), Kind::Txt),
        (
            format!("_dmarc.{d}"),
            format!("v=DMARC1; p=reject; rua=mailto:dmarc@{d}"),
            Kind::Txt,
        ),
        (
            format!("selector1._domainkey.{d}"),
            DKIM_KEY.to_owned(),
            Kind::Txt,
        ),
        (d.to_owned(), format!("mx.{d}"), Kind::Mx),
    ]
}

/// The kind of a record of [`mail_domain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TXT.
    Txt,
    /// MX with preference 10.
    Mx,
}

/// The records of [`mail_domain`] lists as [`Rr`]s.
pub fn rrs(records: &[(String, String, Kind)]) -> Vec<Rr<'_>> {
    records
        .iter()
        .map(|(name, value, kind)| match kind {
            Kind::Txt => Rr::Txt(name, value),
            Kind::Mx => Rr::Mx(name, value, 10),
        })
        .collect()
}
