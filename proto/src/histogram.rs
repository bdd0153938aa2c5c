//! Latency histograms on the wire: the standard HdrHistogram V2 + deflate encoding,
//! so that HdrHistogram libraries in other languages can read what Vantage stores.
//!
//! Values are **microseconds**. Every Vantage histogram uses the same profile
//! ([`new_latency`]): 1 µs to 1 hour at 3 significant digits.
//!
//! [`decode`] treats its input as hostile (it arrives over gRPC): it bounds the
//! compressed and the inflated size and checks the header's range and precision
//! before any counts array is allocated.

use std::io::Read;

use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

mod sparse;
pub use sparse::SparseCounts;

/// Highest latency a histogram tracks: one hour, in microseconds. Larger values
/// are clamped to it when recorded.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits kept: 3 gives 0.1 % value resolution.
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Largest encoded histogram accepted by [`decode`]. An encoded Vantage histogram
/// is a few hundred bytes; 64 KiB leaves room for other writers' profiles.
pub const MAX_ENCODED_BYTES: usize = 64 * 1024;
/// Largest inflated V2 payload accepted by [`decode`] (a deflate bomb guard).
pub const MAX_INFLATED_BYTES: usize = 1024 * 1024;
/// Largest `highestTrackableValue` accepted in a decoded header (about 50 days in
/// µs). Together with [`MAX_DECODE_SIGNIFICANT_DIGITS`] this caps the counts array
/// a decoder allocates at about 40k entries.
pub const MAX_DECODE_HIGHEST: u64 = 1 << 42;
/// Largest precision accepted in a decoded header.
pub const MAX_DECODE_SIGNIFICANT_DIGITS: u32 = 3;

/// Cookies carry the word size in bits 4-7 (0x10 for the standard writers);
/// readers compare them with that nibble masked off, as every HdrHistogram does.
const COOKIE_MASK: u32 = !0xf0;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304;
const V2_COOKIE: u32 = 0x1c84_9303;
/// Cookie, payload length, normalizing offset, digits, lowest, highest, ratio.
const V2_HEADER_BYTES: usize = 40;

/// Why an encoded histogram was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HistogramError {
    /// The input is larger than [`MAX_ENCODED_BYTES`] or inflates beyond
    /// [`MAX_INFLATED_BYTES`]; the sender is not using the Vantage profile.
    #[error("encoded histogram too large ({0} bytes)")]
    TooLarge(usize),
    /// The bytes are not an HdrHistogram V2 deflate encoding.
    #[error("not an HdrHistogram V2 deflate encoding: {0}")]
    Malformed(String),
    /// The header asks for a range or precision beyond the accepted limits.
    #[error("histogram header out of range: {0}")]
    OutOfRange(String),
}

/// A new, empty latency histogram with the Vantage profile.
pub fn new_latency() -> Histogram<u64> {
    // Invariant: these constant bounds are valid (low >= 1, high >= 2 * low,
    // digits <= 5), so construction cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records `micros` into `h`, clamping into the trackable range.
pub fn record_micros(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.clamp(1, MAX_LATENCY_US));
}

/// Encodes with the standard V2 + deflate encoding.
pub fn encode(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Invariant: serializing into a Vec cannot hit an I/O error, and a histogram
    // built with the Vantage profile has in-range counts.
    V2DeflateSerializer::new()
        .serialize(h, &mut out)
        .expect("serializing a histogram into memory");
    out
}

/// Decodes a V2 + deflate encoding, refusing oversized or out-of-profile input.
pub fn decode(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    if bytes.len() > MAX_ENCODED_BYTES {
        return Err(HistogramError::TooLarge(bytes.len()));
    }
    if bytes.len() < 8 {
        return Err(HistogramError::Malformed("shorter than its header".into()));
    }
    let cookie = be_u32(&bytes[0..4]);
    if cookie & COOKIE_MASK != V2_COMPRESSED_COOKIE {
        return Err(HistogramError::Malformed(format!("cookie {cookie:#x}")));
    }
    let declared = be_u32(&bytes[4..8]) as usize;
    if declared != bytes.len() - 8 {
        return Err(HistogramError::Malformed(format!(
            "declares {declared} compressed bytes, carries {}",
            bytes.len() - 8
        )));
    }
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(&bytes[8..])
        .take(MAX_INFLATED_BYTES as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| HistogramError::Malformed(format!("deflate: {e}")))?;
    if inflated.len() > MAX_INFLATED_BYTES {
        return Err(HistogramError::TooLarge(inflated.len()));
    }
    check_v2_header(&inflated)?;
    Deserializer::new()
        .deserialize(&mut inflated.as_slice())
        .map_err(|e| HistogramError::Malformed(format!("{e:?}")))
}

fn check_v2_header(v2: &[u8]) -> Result<(), HistogramError> {
    if v2.len() < V2_HEADER_BYTES {
        return Err(HistogramError::Malformed(
            "payload shorter than V2 header".into(),
        ));
    }
    if be_u32(&v2[0..4]) & COOKIE_MASK != V2_COOKIE {
        return Err(HistogramError::Malformed("inner cookie is not V2".into()));
    }
    // The decoder allocates what the header declares: it must be what is
    // there (found by fuzzing: a 52-byte input declaring 2 GiB).
    let declared = be_u32(&v2[4..8]) as usize;
    if declared != v2.len() - V2_HEADER_BYTES {
        return Err(HistogramError::Malformed(format!(
            "declares {declared} payload bytes, carries {}",
            v2.len() - V2_HEADER_BYTES
        )));
    }
    let digits = be_u32(&v2[12..16]);
    let lowest = be_u64(&v2[16..24]);
    let highest = be_u64(&v2[24..32]);
    if digits > MAX_DECODE_SIGNIFICANT_DIGITS {
        return Err(HistogramError::OutOfRange(format!(
            "{digits} significant digits (max {MAX_DECODE_SIGNIFICANT_DIGITS})"
        )));
    }
    if lowest < 1 || highest > MAX_DECODE_HIGHEST || highest < lowest.saturating_mul(2) {
        return Err(HistogramError::OutOfRange(format!(
            "range {lowest}..{highest} (max {MAX_DECODE_HIGHEST})"
        )));
    }
    Ok(())
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Adds `other` into `acc`. `acc` should come from [`new_latency`]; histograms
/// from other writers with a wider range make `acc` grow instead of failing.
pub fn merge(acc: &mut Histogram<u64>, other: &Histogram<u64>) {
    acc.auto(true);
    // Invariant: with auto-resize on, `add` only fails on count overflow, which
    // u64 counts of probe results cannot reach.
    acc.add(other).expect("auto-resizing histogram add");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_header_declaring_more_payload_than_it_carries_is_refused() {
        // Found by the `histogram` fuzz target: 52 bytes whose V2 header
        // declares a 2 GiB payload, which the decoder would allocate.
        // (Re-compressed with a valid checksum: fuzz builds skip it.)
        let input = [
            28, 132, 147, 20, 0, 0, 0, 44, 120, 218, 147, 105, 153, 44, 220, 192, 192, 192, 203, 0,
            1, 204, 80, 154, 17, 68, 92, 155, 188, 132, 193, 254, 3, 76, 128, 32, 75, 41, 233, 123,
            162, 158, 24, 211, 106, 11, 38, 0, 221, 132, 12, 219,
        ];
        match decode(&input) {
            Err(HistogramError::Malformed(m)) => {
                assert!(m.contains("declares 2147483661 payload bytes"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn round_trip_keeps_counts_and_percentiles() {
        let mut h = new_latency();
        for v in [120, 950, 1_000, 25_000, 300_000, 299_999] {
            record_micros(&mut h, v);
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back.len(), 6);
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(back.max(), h.max());
        assert_eq!(back, h);
    }

    #[test]
    fn refuses_garbage_and_bombs() {
        assert!(matches!(decode(b"nope"), Err(HistogramError::Malformed(_))));
        let mut bad = encode(&new_latency());
        bad[9] ^= 0xff;
        assert!(decode(&bad).is_err());
        assert!(matches!(
            decode(&vec![0u8; MAX_ENCODED_BYTES + 1]),
            Err(HistogramError::TooLarge(_))
        ));
    }

    #[test]
    fn refuses_a_header_asking_for_a_huge_counts_array() {
        let wide = Histogram::<u64>::new_with_bounds(1, u64::MAX / 4, 5).unwrap();
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&wide, &mut bytes)
            .unwrap();
        assert!(matches!(decode(&bytes), Err(HistogramError::OutOfRange(_))));
    }

    #[test]
    fn clamps_values_outside_the_range() {
        let mut h = new_latency();
        record_micros(&mut h, 0);
        record_micros(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_LATENCY_US);
    }

    proptest! {
        #[test]
        fn codec_round_trips(values in proptest::collection::vec(1u64..MAX_LATENCY_US, 0..200)) {
            let mut h = new_latency();
            for v in &values { record_micros(&mut h, *v); }
            let back = decode(&encode(&h)).unwrap();
            prop_assert_eq!(back, h);
        }

        #[test]
        fn merge_is_associative(
            a in proptest::collection::vec(1u64..10_000_000, 0..50),
            b in proptest::collection::vec(1u64..10_000_000, 0..50),
            c in proptest::collection::vec(1u64..10_000_000, 0..50),
        ) {
            let mk = |vs: &[u64]| { let mut h = new_latency(); for v in vs { record_micros(&mut h, *v); } h };
            let (ha, hb, hc) = (mk(&a), mk(&b), mk(&c));
            let mut left = ha.clone(); merge(&mut left, &hb); merge(&mut left, &hc);
            let mut bc = hb.clone(); merge(&mut bc, &hc);
            let mut right = ha.clone(); merge(&mut right, &bc);
            prop_assert_eq!(left, right);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }
    }
}
