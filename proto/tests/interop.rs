//! A histogram encoded by Vantage is read by an independent HdrHistogram
//! implementation: the reference Python package `hdrhistogram` (installed by
//! `.ci/run`). This is the contract that lets other tools read stored histograms.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use vantage_proto::histogram;

#[test]
fn python_hdrhistogram_decodes_our_encoding() {
    let mut h = histogram::new_latency();
    // 1000 values from 1 ms to 1 s, plus a 2.5 s outlier.
    for i in 1..=1000u64 {
        histogram::record_micros(&mut h, i * 1000);
    }
    histogram::record_micros(&mut h, 2_500_000);
    let blob = base64::engine::general_purpose::STANDARD.encode(histogram::encode(&h));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/decode_hdr.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (see .ci/run)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(blob.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python reader failed (is `pip install hdrhistogram` done? .ci/run does it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| -> u64 {
        let key = format!("\"{name}\": ");
        let start = text
            .find(&key)
            .unwrap_or_else(|| panic!("{name} in {text}"))
            + key.len();
        text[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("total"), 1001);
    for (name, q) in [("p50", 0.50), ("p95", 0.95), ("p99", 0.99)] {
        let ours = h.value_at_quantile(q);
        let theirs = field(name);
        // Both sides report the highest-equivalent value of the bucket; allow the
        // 0.1 % resolution of 3 significant digits.
        let tol = ours / 1000 + 1;
        assert!(
            ours.abs_diff(theirs) <= tol,
            "{name}: ours {ours}, python {theirs}"
        );
    }
    assert!(
        field("max").abs_diff(2_500_000) <= 2_500,
        "max {}",
        field("max")
    );
    assert!(field("min").abs_diff(1000) <= 1, "min {}", field("min"));
}
