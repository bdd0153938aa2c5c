//! Histograms of the Vantage profile as counts by bucket index, decoded from
//! and encoded to the same V2 + deflate bytes as [`super::encode`].
//!
//! A [`Histogram`](hdrhistogram::Histogram) of the profile is a counts array
//! of about 23,000 buckets, allocated, zeroed, walked by `add` and by the
//! encoder whatever it holds. A probe window holds a handful of samples, so
//! summing windows (the coordinator's roll-ups) through full histograms
//! spends nearly all its time on empty buckets. [`SparseCounts`] keeps only
//! the buckets in use: decoding, adding and encoding cost what was recorded.
//!
//! The bytes are interchangeable with the full histogram's: [`SparseCounts::encode`]
//! writes exactly what [`super::encode`] writes for the same counts (same V2
//! layout, same varints, same deflate settings), and [`SparseCounts::decode`]
//! accepts what [`super::decode`] accepts for the profile (other profiles
//! give `None`; merge those through a full histogram).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::OnceLock;

use super::{
    be_u32, be_u64, check_v2_header, new_latency, COOKIE_MASK, MAX_ENCODED_BYTES,
    MAX_INFLATED_BYTES, MAX_LATENCY_US, SIGNIFICANT_DIGITS, V2_COMPRESSED_COOKIE, V2_COOKIE,
    V2_HEADER_BYTES,
};

/// The word-size nibble the standard writers put in their cookies.
const WORD_SIZE_BITS: u32 = 0x10;

/// Buckets of the profile's counts array.
fn profile_buckets() -> u64 {
    static BUCKETS: OnceLock<u64> = OnceLock::new();
    *BUCKETS.get_or_init(|| new_latency().distinct_values() as u64)
}

/// A histogram of the Vantage profile ([`new_latency`]) as its non-zero
/// counts by bucket index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseCounts {
    counts: BTreeMap<u32, u64>,
}

impl SparseCounts {
    /// Decodes a V2 + deflate encoding of the Vantage profile. `None` when
    /// the bytes are not one (malformed, oversized, or another range or
    /// precision).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_ENCODED_BYTES || bytes.len() < 8 {
            return None;
        }
        if be_u32(&bytes[0..4]) & COOKIE_MASK != V2_COMPRESSED_COOKIE {
            return None;
        }
        if be_u32(&bytes[4..8]) as usize != bytes.len() - 8 {
            return None;
        }
        let mut v2 = Vec::new();
        flate2::read::ZlibDecoder::new(&bytes[8..])
            .take(MAX_INFLATED_BYTES as u64 + 1)
            .read_to_end(&mut v2)
            .ok()?;
        if v2.len() > MAX_INFLATED_BYTES || check_v2_header(&v2).is_err() {
            return None;
        }
        let profile = be_u32(&v2[8..12]) == 0
            && be_u32(&v2[12..16]) == u32::from(SIGNIFICANT_DIGITS)
            && be_u64(&v2[16..24]) == 1
            && be_u64(&v2[24..32]) == MAX_LATENCY_US
            && be_u64(&v2[32..40]) == 1f64.to_bits();
        if !profile {
            return None;
        }
        let buckets = profile_buckets();
        let mut payload = &v2[V2_HEADER_BYTES..];
        let mut counts = BTreeMap::new();
        let mut index: u64 = 0;
        while !payload.is_empty() {
            let n = zig_zag_decode(read_varint(&mut payload)?);
            if n < 0 {
                index = index.checked_add(n.unsigned_abs())?;
            } else {
                if index >= buckets {
                    return None;
                }
                if n > 0 {
                    counts.insert(index as u32, n as u64);
                }
                index += 1;
            }
        }
        Some(SparseCounts { counts })
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.counts.values().fold(0, |a, c| a.saturating_add(*c))
    }

    /// Adds `other`'s samples.
    pub fn add(&mut self, other: &SparseCounts) {
        for (i, c) in &other.counts {
            let slot = self.counts.entry(*i).or_default();
            *slot = slot.saturating_add(*c);
        }
    }

    /// Takes `other`'s samples away, bucket by bucket, never below zero.
    pub fn saturating_sub(&mut self, other: &SparseCounts) {
        for (i, c) in &other.counts {
            if let Some(slot) = self.counts.get_mut(i) {
                *slot = slot.saturating_sub(*c);
                if *slot == 0 {
                    self.counts.remove(i);
                }
            }
        }
    }

    /// The V2 + deflate encoding, byte for byte what [`super::encode`]
    /// writes for a histogram with these counts.
    pub fn encode(&self) -> Vec<u8> {
        let mut v2 = Vec::with_capacity(V2_HEADER_BYTES + 4 * self.counts.len() + 4);
        v2.extend_from_slice(&(V2_COOKIE | WORD_SIZE_BITS).to_be_bytes());
        v2.extend_from_slice(&0u32.to_be_bytes()); // payload length, below
        v2.extend_from_slice(&0u32.to_be_bytes()); // normalizing index offset
        v2.extend_from_slice(&u32::from(SIGNIFICANT_DIGITS).to_be_bytes());
        v2.extend_from_slice(&1u64.to_be_bytes());
        v2.extend_from_slice(&MAX_LATENCY_US.to_be_bytes());
        v2.extend_from_slice(&1f64.to_bits().to_be_bytes());
        let mut next: u32 = 0;
        for (&i, &c) in &self.counts {
            // The reference writer runs of two or more empty buckets as one
            // negative number, and a lone empty bucket as a zero count.
            match i - next {
                0 => {}
                1 => write_varint(&mut v2, zig_zag_encode(0)),
                gap => write_varint(&mut v2, zig_zag_encode(-i64::from(gap))),
            }
            write_varint(&mut v2, zig_zag_encode(c.min(i64::MAX as u64) as i64));
            next = i + 1;
        }
        if self.counts.is_empty() {
            // An empty histogram still writes its first bucket.
            write_varint(&mut v2, 0);
        }
        let payload = (v2.len() - V2_HEADER_BYTES) as u32;
        v2[4..8].copy_from_slice(&payload.to_be_bytes());

        let mut out = Vec::with_capacity(8 + v2.len() / 2);
        out.extend_from_slice(&(V2_COMPRESSED_COOKIE | WORD_SIZE_BITS).to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        let mut z = flate2::write::ZlibEncoder::new(out, flate2::Compression::default());
        // Invariant: writing into a Vec cannot fail.
        z.write_all(&v2).expect("deflating into memory");
        let mut out = z.finish().expect("deflating into memory");
        let compressed = (out.len() - 8) as u32;
        out[4..8].copy_from_slice(&compressed.to_be_bytes());
        out
    }
}

fn zig_zag_encode(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn zig_zag_decode(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// HdrHistogram's varint: LEB128 for the first eight 7-bit groups, then the
/// ninth byte whole (at most 9 bytes for 64 bits).
fn write_varint(out: &mut Vec<u8>, mut n: u64) {
    for _ in 0..8 {
        if n < 0x80 {
            out.push(n as u8);
            return;
        }
        out.push(0x80 | (n & 0x7f) as u8);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for group in 0..9 {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        if group == 8 {
            return Some(n | (u64::from(b) << 56));
        }
        n |= u64::from(b & 0x7f) << (7 * group);
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::{decode, encode, merge, record_micros};
    use super::*;
    use hdrhistogram::Histogram;
    use proptest::prelude::*;

    fn full(values: &[u64]) -> Histogram<u64> {
        let mut h = new_latency();
        for v in values {
            record_micros(&mut h, *v);
        }
        h
    }

    #[test]
    fn varints_round_trip_at_every_length() {
        for shift in 0..64 {
            for n in [1u64 << shift, (1u64 << shift) - 1, u64::MAX >> shift] {
                let mut buf = Vec::new();
                write_varint(&mut buf, n);
                assert!(buf.len() <= 9);
                let mut input = buf.as_slice();
                assert_eq!(read_varint(&mut input), Some(n));
                assert!(input.is_empty());
            }
        }
    }

    #[test]
    fn an_empty_histogram_encodes_as_the_reference_does() {
        assert_eq!(SparseCounts::default().encode(), encode(&new_latency()));
        let back = SparseCounts::decode(&encode(&new_latency())).unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn other_profiles_are_not_decoded() {
        let mut other = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).unwrap();
        other.record(1_000).unwrap();
        let mut bytes = Vec::new();
        hdrhistogram::serialization::Serializer::serialize(
            &mut hdrhistogram::serialization::V2DeflateSerializer::new(),
            &other,
            &mut bytes,
        )
        .unwrap();
        assert!(decode(&bytes).is_ok());
        assert_eq!(SparseCounts::decode(&bytes), None);
        assert_eq!(SparseCounts::decode(b"not a histogram"), None);
    }

    proptest! {
        #[test]
        fn encodes_byte_for_byte_as_the_reference(values in proptest::collection::vec(1u64..MAX_LATENCY_US, 0..300)) {
            let h = full(&values);
            let reference = encode(&h);
            let sparse = SparseCounts::decode(&reference).unwrap();
            prop_assert_eq!(sparse.len(), h.len());
            prop_assert_eq!(sparse.encode(), reference);
            prop_assert_eq!(decode(&sparse.encode()).unwrap(), h);
        }

        #[test]
        fn add_and_sub_match_full_histograms(
            a in proptest::collection::vec(1u64..100_000_000, 0..80),
            b in proptest::collection::vec(1u64..100_000_000, 0..80),
        ) {
            let (ha, hb) = (full(&a), full(&b));
            let mut sum = SparseCounts::decode(&encode(&ha)).unwrap();
            let sb = SparseCounts::decode(&encode(&hb)).unwrap();
            sum.add(&sb);
            let mut merged = ha.clone();
            merge(&mut merged, &hb);
            prop_assert_eq!(sum.encode(), encode(&merged));
            // Taking b away again leaves a.
            sum.saturating_sub(&sb);
            prop_assert_eq!(decode(&sum.encode()).unwrap(), ha);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SparseCounts::decode(&bytes);
        }
    }
}
