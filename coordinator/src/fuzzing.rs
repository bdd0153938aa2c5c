//! Bodies of the fuzz targets (`fuzz/`, cargo-fuzz on nightly), kept here so
//! a stable test replays the committed corpora (`fuzz/corpus/TARGET/`) with
//! the same code. Each takes arbitrary bytes and panics only on a broken
//! property: input from the network or a file must never panic Vantage.

use std::path::Path;

use prost::Message;
use vantage_proto::histogram;
use vantage_proto::threshold::Threshold;
use vantage_proto::v1::{agent_message, AgentMessage, CoordinatorMessage};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("grpc_messages", grpc_messages),
    ("histogram", histogram_decoder),
    ("config", config_parser),
    ("threshold", threshold_parser),
    ("egress", egress_classifier),
];

/// What the coordinator and the agent decode from each other: whatever
/// decodes re-encodes to bytes that decode to the same message, and the
/// histograms inside a result batch go through the guarded decoder.
pub fn grpc_messages(data: &[u8]) {
    if let Ok(m) = AgentMessage::decode(data) {
        let again = AgentMessage::decode(m.encode_to_vec().as_slice())
            .expect("a decoded AgentMessage re-encodes to a decodable one");
        assert_eq!(m, again);
        if let Some(agent_message::Msg::Results(batch)) = &m.msg {
            for w in &batch.windows {
                for p in &w.phases {
                    histogram_decoder(&p.histogram);
                }
            }
        }
    }
    if let Ok(m) = CoordinatorMessage::decode(data) {
        let again = CoordinatorMessage::decode(m.encode_to_vec().as_slice())
            .expect("a decoded CoordinatorMessage re-encodes to a decodable one");
        assert_eq!(m, again);
    }
}

/// The HdrHistogram V2 + deflate decoders: bounded, and what they accept
/// encodes again to the same counts. The sparse decoder (the roll-ups')
/// accepts nothing the full one (ingest validation) refuses, and encodes
/// byte for byte as the full one does.
pub fn histogram_decoder(data: &[u8]) {
    let full = histogram::decode(data);
    if let Ok(h) = &full {
        let again = histogram::decode(&histogram::encode(h))
            .expect("an accepted histogram re-encodes to a decodable one");
        assert_eq!(h.len(), again.len());
        assert_eq!(h.max(), again.max());
    }
    if let Some(sparse) = histogram::SparseCounts::decode(data) {
        let h = full
            .as_ref()
            .expect("what the sparse decoder accepts, the full decoder accepts");
        assert_eq!(sparse.len(), h.len());
        let bytes = sparse.encode();
        assert_eq!(bytes, histogram::encode(h), "same counts, same bytes");
        assert_eq!(
            histogram::SparseCounts::decode(&bytes).as_ref(),
            Some(&sparse)
        );
    }
}

/// The coordinator's config parser (secrets are read from the environment
/// or bounded files; errors carry positions).
pub fn config_parser(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = crate::config::parse(text, Path::new("fuzz/vantage.toml")) {
            assert!(!errors.0.is_empty(), "an error result with no error");
        }
    }
}

/// The threshold syntax (`p(95)<500`): what parses prints in a canonical
/// form that parses to the same threshold.
pub fn threshold_parser(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = Threshold::parse_syntax(text) {
            let canonical = t.to_string();
            let again = Threshold::parse_syntax(&canonical)
                .unwrap_or_else(|e| panic!("{canonical:?} from {text:?}: {e}"));
            assert_eq!(t, again, "{canonical:?} from {text:?}");
        }
    }
}

/// The agent's egress policy: CIDR ranges from flags and the environment,
/// and the classifier of addresses. A range that parses prints in a form
/// that parses to the same range; an IPv4-mapped address is never public; a
/// NAT64 address is as public as the IPv4 address it embeds; an address on
/// the allow-list always passes.
pub fn egress_classifier(data: &[u8]) {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use vantage_agent::egress::{classify, Cidr, EgressPolicy};

    if let Ok(text) = std::str::from_utf8(data) {
        for part in text.split(',') {
            if let Ok(range) = part.parse::<Cidr>() {
                let again: Cidr = range
                    .to_string()
                    .parse()
                    .unwrap_or_else(|e| panic!("{range} from {part:?}: {e}"));
                assert_eq!(range, again, "{part:?}");
            }
        }
        let _ = EgressPolicy::from_flags_and_env(&[], Some(text));
    }
    let Some(bytes) = data.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) else {
        return;
    };
    let v6 = Ipv6Addr::from(bytes);
    let v4 = Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
    assert!(
        classify(IpAddr::V6(v4.to_ipv6_mapped())).is_some(),
        "{v4} mapped"
    );
    let nat64 = Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(u32::from(v4)));
    assert_eq!(
        classify(IpAddr::V4(v4)).is_some(),
        classify(IpAddr::V6(nat64)).is_some(),
        "{v4} and {nat64}"
    );
    for ip in [IpAddr::V6(v6), IpAddr::V4(v4)] {
        let single: Cidr = ip.to_string().parse().expect("an address is a range");
        assert!(single.contains(ip), "{single} contains {ip}");
        assert!(EgressPolicy::new(vec![single]).check(ip).is_ok(), "{ip}");
        let denied = EgressPolicy::default().check(ip).is_err();
        assert_eq!(denied, classify(ip).is_some(), "{ip}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sparse branch of [`histogram_decoder`] runs on real encodings:
    /// empty, one sample, and thousands spread up to the profile's top.
    #[test]
    fn both_decoders_agree_on_recorded_histograms() {
        let mut cases = vec![histogram::new_latency()];
        let mut one = histogram::new_latency();
        histogram::record_micros(&mut one, 1_234);
        cases.push(one);
        let mut spread = histogram::new_latency();
        for i in 0..5_000u64 {
            histogram::record_micros(&mut spread, 1 + i * i * 37 % histogram::MAX_LATENCY_US);
        }
        histogram::record_micros(&mut spread, histogram::MAX_LATENCY_US);
        cases.push(spread);
        for h in &cases {
            let bytes = histogram::encode(h);
            assert!(histogram::SparseCounts::decode(&bytes).is_some());
            histogram_decoder(&bytes);
        }
    }
}
