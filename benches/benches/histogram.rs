//! The histogram codec sits on every result window an agent sends and every window
//! the coordinator ingests or reads back for the API.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use vantage_proto::histogram;

fn filled(n: u64) -> hdrhistogram::Histogram<u64> {
    let mut h = histogram::new_latency();
    // A spread of latencies from 100 µs to ~2 s, like a busy HTTP check.
    for i in 0..n {
        histogram::record_micros(&mut h, 100 + (i * 7919) % 2_000_000);
    }
    h
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("histogram");
    for n in [1u64, 1_000, 100_000] {
        let h = filled(n);
        let bytes = histogram::encode(&h);
        group.bench_with_input(BenchmarkId::new("encode", n), &h, |b, h| {
            b.iter(|| histogram::encode(black_box(h)))
        });
        group.bench_with_input(BenchmarkId::new("decode", n), &bytes, |b, bytes| {
            b.iter(|| histogram::decode(black_box(bytes)).unwrap())
        });
    }
    let parts: Vec<_> = (0..300).map(|i| filled(10 + i)).collect();
    group.bench_function("merge_300_windows", |b| {
        b.iter(|| {
            let mut acc = histogram::new_latency();
            for p in &parts {
                histogram::merge(&mut acc, black_box(p));
            }
            acc.value_at_quantile(0.95)
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
