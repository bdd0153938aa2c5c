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

/// The HdrHistogram V2 + deflate decoder: bounded, and what it accepts
/// encodes again to the same counts.
pub fn histogram_decoder(data: &[u8]) {
    if let Ok(h) = histogram::decode(data) {
        let again = histogram::decode(&histogram::encode(&h))
            .expect("an accepted histogram re-encodes to a decodable one");
        assert_eq!(h.len(), again.len());
        assert_eq!(h.max(), again.max());
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
