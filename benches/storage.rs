//! Storage put (apply) and get of 1 KiB values, with each durability.
//!
//! Rates are ops/s. `per_write` puts wait for a flush, so one writer pays a
//! whole fsync per put; the 64-writer figure shows how much of that group
//! commit wins back by sharing each flush.
//!
//! `put_beside_hints/c64` (`per_write` only): the same 64 writers while
//! the node stores a hint for each put, as a coordinator does for a replica
//! that is down (up to 64 hints in flight; nobody waits for them, as a
//! client does not wait for the down replica). Against `put/c64` it shows
//! what storing hints costs the writes.

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use levee_node::storage::hints::{Hint, HintStore};
use levee_node::storage::{Durability, Version};
use support::{CONCURRENCY, Direct, bench_ops};
use tokio::sync::Semaphore;

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
        if durability == Durability::PerWrite {
            put_beside_hints(&mut group, &rt, &direct);
        }
        let d = direct.clone();
        bench_ops(&mut group, "get/c1", &rt, 1, move |i| d.clone().get(i));
        group.finish();
    }
}

/// Hints stored at once, at most, beside the writers.
const HINTS_IN_FLIGHT: usize = 64;

fn put_beside_hints(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    direct: &Arc<Direct>,
) {
    let hints =
        Arc::new(HintStore::open(&direct.storage, u64::MAX).expect("cannot open the hints"));
    let slots = Arc::new(Semaphore::new(HINTS_IN_FLIGHT));
    let d = direct.clone();
    bench_ops(
        group,
        &format!("put_beside_hints/c{CONCURRENCY}"),
        rt,
        CONCURRENCY,
        move |i| {
            let (d, hints, slots) = (d.clone(), hints.clone(), slots.clone());
            async move {
                if let Ok(slot) = slots.try_acquire_owned() {
                    tokio::spawn(async move {
                        let hint = Hint {
                            partition: (i % 64) as u32,
                            key: format!("hinted-{i}").into_bytes(),
                            version: Version {
                                hlc: i + 1,
                                writer: 2,
                            },
                            value: Some(support::value()),
                        };
                        let stored = hints.add(2, &hint).await.expect("cannot store a hint");
                        black_box(stored);
                        drop(slot);
                    });
                }
                d.put().await
            }
        },
    );
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
