#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vantage_coordinator::fuzzing::egress_classifier(data));
