//! The TOML reader now lives in `vantage_proto::toml_reader`, shared with the
//! agent's load files; this module keeps the coordinator's paths short.

pub(crate) use vantage_proto::toml_reader::*;
