//! Codec cost: encode + decode of one flight record (about 200 bytes as
//! JSON, the size of the flight-db example's rows) and of a 10,000-row
//! result, for each built-in codec.
//!
//! `cargo bench --bench codec --all-features`

use std::hint::black_box;

use cache_aside::codec::{Bincode, Codec, Json, Postcard};
mod common;

use common::{Flight, flight};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;

fn round_trip<C: Codec, T: Serialize + serde::de::DeserializeOwned>(
    value: &T,
    buf: &mut Vec<u8>,
) -> T {
    buf.clear();
    C::encode(value, buf).expect("encode");
    C::decode(buf).expect("decode")
}

fn bench<C: Codec>(c: &mut Criterion, one: &Flight, many: &Vec<Flight>) {
    let mut buf = Vec::with_capacity(1 << 20);
    let mut g = c.benchmark_group("codec/flight");
    C::encode(one, &mut buf).unwrap();
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(BenchmarkId::new("encode", C::NAME), |b| {
        b.iter(|| {
            buf.clear();
            C::encode(black_box(one), &mut buf).unwrap();
        })
    });
    let bytes = buf.clone();
    g.bench_function(BenchmarkId::new("decode", C::NAME), |b| {
        b.iter(|| C::decode::<Flight>(black_box(&bytes)).unwrap())
    });
    g.bench_function(BenchmarkId::new("round_trip", C::NAME), |b| {
        b.iter(|| round_trip::<C, _>(black_box(one), &mut buf))
    });
    g.finish();
    let mut g = c.benchmark_group("codec/10k_rows");
    g.sample_size(20);
    buf.clear();
    C::encode(many, &mut buf).unwrap();
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(BenchmarkId::new("round_trip", C::NAME), |b| {
        b.iter(|| round_trip::<C, _>(black_box(many), &mut buf))
    });
    g.finish();
}

fn codecs(c: &mut Criterion) {
    let one = flight(1);
    let many: Vec<Flight> = (0..10_000).map(flight).collect();
    for (name, f) in [
        (
            "postcard",
            Postcard::encode::<Flight> as fn(&Flight, &mut Vec<u8>) -> _,
        ),
        ("bincode", Bincode::encode::<Flight>),
        ("json", Json::encode::<Flight>),
    ] {
        let mut out = vec![];
        f(&one, &mut out).unwrap();
        eprintln!("size of one flight record, {name}: {} bytes", out.len());
    }
    bench::<Postcard>(c, &one, &many);
    bench::<Bincode>(c, &one, &many);
    bench::<Json>(c, &one, &many);
}

criterion_group!(benches, codecs);
criterion_main!(benches);
