//! Storage put (apply) and get of 1 KiB values, with each durability.
//!
//! Rates are ops/s. `per_write` puts wait for a flush, so one writer pays a
//! whole fsync per put; the 64-writer figure shows how much of that group
//! commit wins back by sharing each flush.

mod support;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use levee_node::storage::Durability;
use support::{CONCURRENCY, Direct, bench_ops};

fn storage(c: &mut Criterion) {
    let rt = support::runtime();
    for (name, durability) in [
        ("per_write", Durability::PerWrite),
        ("periodic", Durability::Periodic),
    ] {
        let direct = Direct::open(&rt, durability);
        rt.block_on(direct.fill());

        let mut group = c.benchmark_group(format!("storage_{name}"));
        group.throughput(Throughput::Elements(1));
        for concurrency in [1, CONCURRENCY] {
            let d = direct.clone();
            bench_ops(
                &mut group,
                &format!("put/c{concurrency}"),
                &rt,
                concurrency,
                move |_| d.clone().put(),
            );
        }
        let d = direct.clone();
        bench_ops(&mut group, "get/c1", &rt, 1, move |i| d.clone().get(i));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Small and short: the machine is shared, and a per_write put costs
    // an fsync, so long runs buy little precision.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = storage
}
criterion_main!(benches);
