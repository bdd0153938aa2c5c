//! Replays the committed fuzz corpora (`fuzz/corpus/TARGET/`, grown and
//! minimised by `cargo +nightly fuzz`) through the fuzz targets' bodies on
//! stable, so every `cargo test` re-checks what the fuzzers found: no input
//! in them panics or breaks a target's property.

use std::path::Path;

#[test]
fn the_committed_fuzz_corpora_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, target) in vantage_coordinator::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "no corpus for {name}");
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panics", input.display());
        }
        eprintln!("{name}: {} inputs replayed", inputs.len());
    }
}
