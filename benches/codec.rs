//! Encoding and decoding of the two frames that carry values: a Put request
//! and a Get response holding a value, from an empty value up to the
//! largest one a node accepts by default (4 MiB).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use levee_node::proto::{
    ClientRequest, Found, Request, RequestFrame, Response, ResponseFrame, codec,
};
use levee_node::storage::Version;

const SIZES: [(&str, usize); 5] = [
    ("0B", 0),
    ("1KiB", 1 << 10),
    ("64KiB", 64 << 10),
    ("1MiB", 1 << 20),
    ("4MiB", 4 << 20),
];

const VERSION: Version = Version {
    hlc: 0x0001_8f00_0000_0001,
    writer: 0x5eed_5eed_5eed_5eed,
};

fn value(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn put_request(value: Vec<u8>) -> RequestFrame {
    RequestFrame {
        id: 42,
        timeout_ms: 5_000,
        request: Request::Client(ClientRequest::Put {
            key: b"bench-key-000001".to_vec(),
            value,
            version: VERSION,
            epoch: 0,
        }),
    }
}

fn get_response(value: Vec<u8>) -> ResponseFrame {
    ResponseFrame {
        id: 42,
        pressure: 40,
        epoch: 1_234,
        result: Ok(Response::Get(Some(Found {
            version: VERSION,
            value: Some(value),
        }))),
    }
}

/// Benchmarks encode and decode of one kind of frame at every size.
fn frames<T>(
    c: &mut Criterion,
    name: &str,
    make: impl Fn(Vec<u8>) -> T,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> T,
) {
    let mut group = c.benchmark_group(name);
    for (label, len) in SIZES {
        let frame = make(value(len));
        let encoded = encode(&frame);
        // Bytes of the whole frame rather than of the value alone, so the
        // envelope counts and the empty value still has a rate.
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", label), &frame, |b, frame| {
            b.iter(|| encode(black_box(frame)))
        });
        // The reader hands decode the payload without its length prefix.
        group.bench_with_input(
            BenchmarkId::new("decode", label),
            &encoded[4..],
            |b, payload| b.iter(|| decode(black_box(payload))),
        );
    }
    group.finish();
}

fn codec(c: &mut Criterion) {
    frames(
        c,
        "request_put",
        put_request,
        |f| codec::encode(f).expect("encode request"),
        |p| codec::decode_request(p).expect("decode request"),
    );
    frames(
        c,
        "response_get",
        get_response,
        |f| codec::encode(f).expect("encode response"),
        |p| codec::decode_response(p).expect("decode response"),
    );
}

criterion_group! {
    name = benches;
    // Short runs: the machine is shared, and the large sizes are steady
    // enough that more samples would not change the picture.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
