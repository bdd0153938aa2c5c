//! The agent's egress policy: where checks and coordinator-driven load may
//! connect (shared/RELIABILITY.md, OWASP API7: server-side request forgery).
//!
//! Whoever can edit the coordinator's config (or its API) decides what the
//! agents fetch. Without a policy that would let them reach what only the
//! agent's network can reach: the cloud metadata service at 169.254.169.254,
//! an admin port on loopback, the office LAN. So an agent refuses, by default,
//! every address that is not public:
//!
//! - IPv4: `0.0.0.0/8`, loopback `127.0.0.0/8`, RFC 1918 (`10/8`,
//!   `172.16/12`, `192.168/16`), CGNAT `100.64/10`, link-local `169.254/16`
//!   (cloud metadata), `192.0.0.0/24`, the documentation and benchmarking
//!   ranges, multicast and `240/4` (with the broadcast address).
//! - IPv6: `::` and `::1`, IPv4-mapped `::ffff:0:0/96` and IPv4-compatible
//!   `::/96` addresses (whatever they embed), ULA `fc00::/7`, link-local
//!   `fe80::/10`, site-local `fec0::/10`, multicast, discard-only, Teredo,
//!   documentation and benchmarking ranges, local-use NAT64, and NAT64 or
//!   6to4 addresses that embed a non-public IPv4 address.
//!
//! The check runs on the **resolved** address, after DNS, and the connection is
//! made to exactly the address that passed (no second lookup a rebinding DNS
//! server could answer differently). Redirects go through the same path, so
//! every hop is checked. An allow-list of CIDR ranges (`--egress-allow`, or
//! `VANTAGE_EGRESS_ALLOW`) opens internal targets for private monitoring.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Environment variable with allowed CIDR ranges, comma-separated.
pub const ALLOW_ENV: &str = "VANTAGE_EGRESS_ALLOW";

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `fd00::/8`,
/// or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. An IPv4 network also contains the
    /// IPv4-mapped form of its addresses (`::ffff:10.0.0.1` is in
    /// `10.0.0.0/8`): both reach the same host.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), ip) => match ip.to_canonical() {
                IpAddr::V4(ip) => {
                    prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
                }
                IpAddr::V6(_) => false,
            },
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

/// Whether the first `prefix` of `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A CIDR range that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a CIDR range ({reason}); write it as 10.0.0.0/8, fd00::/8 or a single address")]
pub struct CidrError {
    input: String,
    reason: &'static str,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrError {
            input: s.to_owned(),
            reason,
        };
        let text = s.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        // Only the dotted-quad and RFC 4291 forms: the shorthand forms the
        // system resolver accepts (127.1, 2130706433) are refused so a range
        // means what it looks like.
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let p: u8 = p.parse().map_err(|_| err("the prefix is not a number"))?;
                if p > max {
                    return Err(err("the prefix is longer than the address"));
                }
                p
            }
        };
        let cidr = Cidr { addr, prefix };
        if !cidr.contains_only_its_network() {
            return Err(err("host bits are set below the prefix"));
        }
        Ok(cidr)
    }
}

impl Cidr {
    /// Whether the bits below the prefix are zero (`10.0.0.0/8`, not
    /// `10.1.2.3/8`, which is almost always a typo for a narrower range).
    fn contains_only_its_network(&self) -> bool {
        let (bits, value) = match self.addr {
            IpAddr::V4(a) => (32u8, u128::from(u32::from(a))),
            IpAddr::V6(a) => (128u8, u128::from(a)),
        };
        let host_mask = u128::MAX
            .checked_shr(u32::from(128 - (bits - self.prefix)))
            .unwrap_or(0);
        value & host_mask == 0
    }
}

/// Why an address is not public: the name of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved(&'static str);

impl fmt::Display for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The IPv4 ranges that are not public, with their names.
const V4_RESERVED: [(Ipv4Addr, u8, &str); 16] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" (0.0.0.0/8)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private (RFC 1918)"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "carrier-grade NAT (100.64.0.0/10)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local (cloud metadata)",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private (RFC 1918)"),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "IETF protocol assignments (192.0.0.0/24)",
    ),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "documentation (TEST-NET-1)",
    ),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "6to4 relay anycast (192.88.99.0/24)",
    ),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private (RFC 1918)"),
    (
        Ipv4Addr::new(198, 18, 0, 0),
        15,
        "benchmarking (198.18.0.0/15)",
    ),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation (TEST-NET-2)",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation (TEST-NET-3)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved (240.0.0.0/4)"),
];

/// The IPv6 ranges that are not public whatever they contain.
const V6_RESERVED: [(u128, u8, &str); 13] = [
    (0, 128, "unspecified (::)"),
    (1, 128, "loopback (::1)"),
    (0xffff_0000_0000, 96, "IPv4-mapped IPv6"),
    (0, 96, "IPv4-compatible IPv6 (deprecated)"),
    (
        0x0064_ff9b_0001 << 80,
        48,
        "local-use NAT64 (64:ff9b:1::/48)",
    ),
    (0x0100 << 112, 64, "discard-only (100::/64)"),
    (0x2001 << 112, 32, "Teredo (2001::/32)"),
    (0x2001_0002 << 96, 48, "benchmarking (2001:2::/48)"),
    (0x2001_0db8 << 96, 32, "documentation (2001:db8::/32)"),
    (0x3fff << 112, 20, "documentation (3fff::/20)"),
    (0xfc00 << 112, 7, "unique local (fc00::/7)"),
    (0xfe80 << 112, 10, "link-local (fe80::/10)"),
    (0xfec0 << 112, 10, "site-local (fec0::/10, deprecated)"),
];

/// `None` for a public address; otherwise the range it belongs to.
pub fn classify(ip: IpAddr) -> Option<Reserved> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Reserved> {
    let bits = u128::from(u32::from(ip));
    V4_RESERVED
        .iter()
        .find(|(net, prefix, _)| prefix_eq(u32::from(*net).into(), bits, 32, *prefix))
        .map(|(_, _, name)| Reserved(name))
}

fn classify_v6(ip: Ipv6Addr) -> Option<Reserved> {
    let bits = u128::from(ip);
    if ip.segments()[0] & 0xff00 == 0xff00 {
        return Some(Reserved("multicast"));
    }
    if let Some((_, _, name)) = V6_RESERVED
        .iter()
        .find(|(net, prefix, _)| prefix_eq(*net, bits, 128, *prefix))
    {
        return Some(Reserved(name));
    }
    // Ranges that embed an IPv4 address reach it through a gateway: they are
    // as public as the address they carry.
    if prefix_eq(0x0064_ff9b << 96, bits, 128, 96) {
        // NAT64 well-known prefix (RFC 6052): the last 32 bits.
        return classify_v4(Ipv4Addr::from(bits as u32))
            .map(|_| Reserved("NAT64 embedding a non-public IPv4 address"));
    }
    if prefix_eq(0x2002 << 112, bits, 128, 16) {
        // 6to4 (RFC 3056): bits 16..48.
        return classify_v4(Ipv4Addr::from((bits >> 80) as u32))
            .map(|_| Reserved("6to4 embedding a non-public IPv4 address"));
    }
    None
}

/// A refusal: the address and why it is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ip} is {range} and refused by the egress policy; allow it with --egress-allow {suggest}")]
pub struct Denied {
    /// The refused address.
    pub ip: IpAddr,
    /// Its range.
    pub range: Reserved,
    suggest: String,
}

/// Where the agent may connect: public addresses, plus the allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<Cidr>,
    unrestricted: bool,
}

impl EgressPolicy {
    /// Public addresses plus `allow`.
    pub fn new(allow: Vec<Cidr>) -> Self {
        EgressPolicy {
            allow,
            unrestricted: false,
        }
    }

    /// Every address: for commands the operator runs by hand on their own
    /// behalf (`vantage-agent probe`, `vantage-agent load`), never for what
    /// the coordinator assigns.
    pub fn unrestricted() -> Self {
        EgressPolicy {
            allow: Vec::new(),
            unrestricted: true,
        }
    }

    /// The ranges of `flags` plus the comma-separated ranges of `env` (the
    /// value of [`ALLOW_ENV`], if set).
    pub fn from_flags_and_env(flags: &[String], env: Option<&str>) -> Result<Self, CidrError> {
        let from_env = env.into_iter().flat_map(|v| v.split(','));
        let allow = flags
            .iter()
            .map(String::as_str)
            .chain(from_env)
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(EgressPolicy::new(allow))
    }

    /// The allow-list.
    pub fn allowed(&self) -> &[Cidr] {
        &self.allow
    }

    /// `Ok` when the agent may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        if self.unrestricted || self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        match classify(ip) {
            None => Ok(()),
            Some(range) => Err(Denied {
                ip,
                range,
                suggest: Cidr {
                    addr: ip,
                    prefix: if ip.is_ipv4() { 32 } else { 128 },
                }
                .to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_classified() {
        for (addr, range) in [
            ("0.0.0.0", "\"this network\" (0.0.0.0/8)"),
            ("10.1.2.3", "private (RFC 1918)"),
            ("172.16.0.1", "private (RFC 1918)"),
            ("172.31.255.255", "private (RFC 1918)"),
            ("192.168.1.1", "private (RFC 1918)"),
            ("100.64.0.1", "carrier-grade NAT (100.64.0.0/10)"),
            ("100.127.255.255", "carrier-grade NAT (100.64.0.0/10)"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("192.0.0.192", "IETF protocol assignments (192.0.0.0/24)"),
            ("198.19.0.1", "benchmarking (198.18.0.0/15)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("250.1.2.3", "reserved (240.0.0.0/4)"),
            ("::", "unspecified (::)"),
            ("::1", "loopback (::1)"),
            ("::ffff:127.0.0.1", "IPv4-mapped IPv6"),
            ("::ffff:8.8.8.8", "IPv4-mapped IPv6"),
            ("::127.0.0.1", "IPv4-compatible IPv6 (deprecated)"),
            ("fd00::1", "unique local (fc00::/7)"),
            ("fc12::1", "unique local (fc00::/7)"),
            ("fe80::1", "link-local (fe80::/10)"),
            ("fec0::1", "site-local (fec0::/10, deprecated)"),
            ("ff02::1", "multicast"),
            ("2001::1", "Teredo (2001::/32)"),
            ("2001:db8::1", "documentation (2001:db8::/32)"),
            (
                "64:ff9b::7f00:1",
                "NAT64 embedding a non-public IPv4 address",
            ),
            (
                "64:ff9b::a9fe:a9fe",
                "NAT64 embedding a non-public IPv4 address",
            ),
            ("64:ff9b:1::1", "local-use NAT64 (64:ff9b:1::/48)"),
            ("2002:7f00:1::", "6to4 embedding a non-public IPv4 address"),
            (
                "2002:c0a8:101::1",
                "6to4 embedding a non-public IPv4 address",
            ),
        ] {
            assert_eq!(
                classify(ip(addr)).map(|r| r.0),
                Some(range),
                "{addr} is not public"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "169.253.255.255",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:1::1",
        ] {
            assert_eq!(classify(ip(addr)), None, "{addr} is public");
            assert_eq!(EgressPolicy::default().check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn the_allow_list_opens_ranges_and_their_mapped_forms() {
        let policy = EgressPolicy::from_flags_and_env(
            &["10.0.0.0/8".into()],
            Some(" 127.0.0.1 , fd00::/8,"),
        )
        .unwrap();
        for ok in ["10.9.8.7", "::ffff:10.0.0.1", "127.0.0.1", "fd00::5"] {
            assert_eq!(policy.check(ip(ok)), Ok(()), "{ok}");
        }
        for denied in ["127.0.0.2", "172.16.0.1", "fc00::1", "169.254.169.254"] {
            assert!(policy.check(ip(denied)).is_err(), "{denied}");
        }
        let err = EgressPolicy::default()
            .check(ip("169.254.169.254"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "169.254.169.254 is link-local (cloud metadata) and refused by the egress \
             policy; allow it with --egress-allow 169.254.169.254/32"
        );
        assert!(EgressPolicy::unrestricted().check(ip("127.0.0.1")).is_ok());
    }

    #[test]
    fn cidr_parsing_is_strict() {
        for ok in [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "127.0.0.1",
            "[::1]",
            "fd00::/8",
            "::/0",
        ] {
            ok.parse::<Cidr>().unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("10.1.2.3/8", "host bits"),
            ("10.0.0.0/33", "longer than"),
            ("::/129", "longer than"),
            ("127.1", "not an IP"),
            ("2130706433", "not an IP"),
            ("10.0.0.0/x", "not a number"),
            ("", "not an IP"),
        ] {
            let err = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(EgressPolicy::from_flags_and_env(&[], Some("10.0.0.0/8,nope")).is_err());
    }
}
