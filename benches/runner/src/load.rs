//! The load itself: the preload (closed loop, bounded concurrency), the
//! open-loop run and the cluster sampler, feeding a [`Timeline`].
//!
//! Open loop: each request is spawned at the instant the [`Schedule`] says
//! it is due, whatever happened to the ones before it, and its latency is
//! measured from that instant. A slow cluster therefore shows up as
//! latency (and, past the in-flight cap, as dropped requests), never as a
//! generator that quietly slows down to match it (coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use levee_node::client::{Client, ClientError};
use levee_node::tls::Transport;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::sampler;
use super::scenario::{Calibration, Preload, Workload};
use super::schedule::{Op, Planned, Profile, Schedule, key_name};
use super::timeline::{ClientCounts, OpKind, Outcome, Timeline, classify};
use super::variants::client_config;

/// Extra time a request gets beyond the client's own timeout before the
/// runner gives up on it: the client's timeout covers the request, not a
/// reactor too busy to notice it fired.
const REQUEST_GRACE: Duration = Duration::from_millis(500);

/// Completed requests waiting for the aggregator. Generous, so request
/// tasks never wait on it; if they do, they wait after their latency was
/// taken, so the figures are unaffected.
const RECORD_QUEUE: usize = 65_536;

/// Attempts per preload key before it counts as failed.
const PRELOAD_ATTEMPTS: u32 = 5;

/// Pause before a preload key's next attempt, times the attempt number: a
/// node refusing for load (`Overloaded`) during the preload's burst of
/// writes gets time to drain instead of the same key again at once.
const PRELOAD_BACKOFF: Duration = Duration::from_millis(100);

/// Time a calibration runs before it starts counting: connections open,
/// caches warm, the admission limit settles.
const CALIBRATION_WARMUP: Duration = Duration::from_secs(1);

/// The client instances of a run: `connections` of them, each with every
/// endpoint, so requests spread over independent connection pools.
pub fn clients(
    endpoints: &[String],
    transport: &Transport,
    workload: &Workload,
) -> Vec<Arc<Client>> {
    (0..workload.connections)
        .map(|i| {
            let mut config = client_config(workload, endpoints, i);
            config.transport = transport.clone();
            Arc::new(Client::new(config))
        })
        .collect()
}

/// The clients of the preload: the workload's, without the adaptive
/// client-side throttle. The preload is a closed-loop burst that may meet
/// refusals while the nodes' admission limits settle; a throttle that
/// learned from them would refuse most of the remaining keys locally, and
/// the run's own clients start with a clean slate.
pub fn preload_clients(
    endpoints: &[String],
    transport: &Transport,
    workload: &Workload,
) -> Vec<Arc<Client>> {
    (0..workload.connections)
        .map(|i| {
            let mut config = client_config(workload, endpoints, i);
            config.throttle_k = 0.0;
            config.transport = transport.clone();
            Arc::new(Client::new(config))
        })
        .collect()
}

/// What the clients have sent so far, summed.
fn client_counts(clients: &[Arc<Client>]) -> ClientCounts {
    let mut total = ClientCounts::default();
    for c in clients {
        total.add(&ClientCounts {
            requests: c.requests(),
            attempts: c.attempts(),
            retries: c.retries(),
            refused_in_client: c.throttled() + c.held_off(),
        });
    }
    total
}

/// Random bytes the values are cut from (one buffer: generating bytes per
/// request would cost more than sending them).
pub fn value_pool(max_bytes: u32, seed: u64) -> Arc<Vec<u8>> {
    let mut bytes = vec![0u8; max_bytes as usize];
    StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    Arc::new(bytes)
}

/// A progress bar on stderr (indicatif draws nothing when stderr is not a
/// terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {msg} ({elapsed_precise})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_owned());
    bar
}

/// Writes keys `0..preload.keys` with bounded concurrency. Fails if more
/// than 1% of them could not be written, since the run's reads would then
/// measure missing keys.
pub async fn preload(clients: &[Arc<Client>], preload: &Preload, seed: u64) -> anyhow::Result<()> {
    if preload.keys == 0 || clients.is_empty() {
        return Ok(());
    }
    let values = value_pool(preload.value_bytes.max(), seed ^ 0x5eed);
    let limit = Arc::new(Semaphore::new(preload.concurrency));
    let bar = progress(preload.keys, "preload");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tasks = JoinSet::new();
    let mut failed = 0u64;
    let mut last_error = None;
    let mut reap = |result: Result<Result<(), ClientError>, tokio::task::JoinError>| match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            failed += 1;
            last_error = Some(e.to_string());
        }
        Err(e) => {
            failed += 1;
            last_error = Some(e.to_string());
        }
    };
    for i in 0..preload.keys {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            bail!("preload: the concurrency limit closed");
        };
        while let Some(done) = tasks.try_join_next() {
            reap(done);
        }
        let client = clients[i as usize % clients.len()].clone();
        let len = preload.value_bytes.sample(&mut rng) as usize;
        let values = values.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let key = key_name(i);
            let mut result = Ok(());
            for attempt in 1..=PRELOAD_ATTEMPTS {
                result = client.put(key.as_bytes(), &values[..len]).await.map(|_| ());
                if result.is_ok() {
                    break;
                }
                if attempt < PRELOAD_ATTEMPTS {
                    tokio::time::sleep(PRELOAD_BACKOFF * attempt).await;
                }
            }
            drop(permit);
            bar.inc(1);
            result
        });
    }
    while let Some(done) = tasks.join_next().await {
        reap(done);
    }
    bar.finish_and_clear();
    if failed * 100 > preload.keys {
        bail!(
            "preload: {failed} of {} keys could not be written; last error: {}",
            preload.keys,
            last_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// Measures the cluster's best goodput (ops/s) with a closed loop:
/// `concurrency` workers each send the workload's next request as soon as
/// their last one answered, for `calibrate_s` after a short warm-up. What
/// a closed loop can get through is the most the cluster serves, so an
/// open-loop load above it is overload.
pub async fn calibrate(
    clients: &[Arc<Client>],
    workload: &Workload,
    calibration: &Calibration,
) -> anyhow::Result<f64> {
    if clients.is_empty() {
        bail!("calibration: no clients");
    }
    let schedule = Arc::new(std::sync::Mutex::new(Schedule::endless(workload)));
    let values = value_pool(workload.value_bytes.max(), workload.seed);
    let from = Instant::now() + CALIBRATION_WARMUP;
    let end = from + Duration::from_secs(calibration.calibrate_s);
    let limit = Duration::from_millis(workload.request_timeout_ms) + REQUEST_GRACE;
    let ok = Arc::new(AtomicU64::new(0));
    let bar = progress(calibration.calibrate_s + 1, "calibrate");
    let mut workers = JoinSet::new();
    for i in 0..calibration.concurrency {
        let client = clients[i % clients.len()].clone();
        let (schedule, values, ok) = (schedule.clone(), values.clone(), ok.clone());
        workers.spawn(async move {
            while Instant::now() < end {
                let next = schedule.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some(planned) = next else { break };
                let result = tokio::time::timeout(limit, execute(&client, &planned, &values)).await;
                let done = Instant::now();
                if matches!(result, Ok(Ok(()))) && done >= from && done < end {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !workers.is_empty() {
        tokio::select! {
            _ = workers.join_next() => {}
            _ = tick.tick() => bar.inc(1),
        }
    }
    bar.finish_and_clear();
    let peak = ok.load(Ordering::Relaxed) as f64 / calibration.calibrate_s as f64;
    if peak <= 0.0 {
        bail!(
            "calibration: no request succeeded in {} s of closed loop; the cluster is not serving",
            calibration.calibrate_s
        );
    }
    Ok(peak)
}

/// One finished request.
struct Record {
    op: OpKind,
    due: Duration,
    latency: Duration,
    outcome: Outcome,
    /// The client's error, for a failed request.
    message: Option<String>,
}

/// Runs the open-loop workload from `start` and the status sampler beside
/// it; returns the timeline once every request has finished.
pub async fn run(
    clients: Vec<Arc<Client>>,
    endpoints: Vec<String>,
    transport: Transport,
    workload: &Workload,
    profile: Profile,
    start: Instant,
) -> Timeline {
    let duration = Duration::from_secs(workload.duration_s);
    let mut timeline = Timeline::new(workload.duration_s as usize);
    let (records_tx, mut records) = mpsc::channel(RECORD_QUEUE);
    let (samples_tx, mut samples) = mpsc::channel(64);
    let (counts_tx, mut counts) = mpsc::channel(64);
    let counted = clients.clone();
    let counts_at_start = client_counts(&counted);
    tokio::spawn(count_attempts(
        counted.clone(),
        start,
        workload.duration_s,
        counts_tx,
    ));
    let generator = tokio::spawn(generate(
        Schedule::new(workload, profile),
        clients,
        value_pool(workload.value_bytes.max(), workload.seed),
        Generator {
            start,
            timeout: Duration::from_millis(workload.request_timeout_ms),
            max_in_flight: workload.max_in_flight,
        },
        records_tx,
    ));
    tokio::spawn(sampler::sample(
        endpoints,
        transport,
        start,
        start + duration,
        samples_tx,
    ));

    let bar = progress(workload.duration_s, "run");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut ok, mut failed) = (0u64, 0u64);
    let (mut records_open, mut samples_open, mut counts_open) = (true, true, true);
    let mut counted_so_far = counts_at_start;
    while records_open || samples_open || counts_open {
        tokio::select! {
            record = records.recv(), if records_open => match record {
                Some(Record { op, due, latency, outcome, message }) => {
                    match outcome {
                        Outcome::Ok => ok += 1,
                        _ => failed += 1,
                    }
                    timeline.record_op(due, latency, outcome, op);
                    if let Some(m) = message {
                        timeline.message(&m);
                    }
                }
                None => records_open = false,
            },
            sample = samples.recv(), if samples_open => match sample {
                Some((at, s)) => timeline.sample(at, s),
                None => samples_open = false,
            },
            count = counts.recv(), if counts_open => match count {
                Some((second, total)) => {
                    timeline.client(second, total.since(&counted_so_far));
                    counted_so_far = total;
                }
                None => counts_open = false,
            },
            _ = tick.tick() => {
                bar.set_position(start.elapsed().as_secs().min(workload.duration_s));
                bar.set_message(format!("ok {ok}  failed {failed}"));
            }
        }
    }
    bar.finish_and_clear();
    // The generator ended before the records channel closed (it held a
    // sender); a panic in it would show as missing requests, so say so.
    match generator.await {
        Ok(dropped) => {
            for due in dropped {
                timeline.record(due, Duration::ZERO, Outcome::Dropped);
            }
        }
        Err(e) => eprintln!("levee bench: the load generator failed: {e}"),
    }
    // Attempts sent after the last second (the last requests retrying)
    // belong to the run too.
    let tail = client_counts(&counted).since(&counted_so_far);
    timeline.client(workload.duration_s.saturating_sub(1), tail);
    timeline
}

/// Reads the clients' counters at the end of every second of the run and
/// sends `(second, totals)`: what was sent in second s is the difference
/// between the totals at the ends of s − 1 and s.
async fn count_attempts(
    clients: Vec<Arc<Client>>,
    start: Instant,
    seconds: u64,
    counts: mpsc::Sender<(u64, ClientCounts)>,
) {
    for second in 0..seconds {
        tokio::time::sleep_until(start + Duration::from_secs(second + 1)).await;
        if counts
            .send((second, client_counts(&clients)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Fixed settings of the generator.
struct Generator {
    start: Instant,
    timeout: Duration,
    max_in_flight: usize,
}

/// Spawns each request at its due instant; returns the due times of the
/// requests that found the in-flight cap full.
async fn generate(
    schedule: Schedule,
    clients: Vec<Arc<Client>>,
    values: Arc<Vec<u8>>,
    settings: Generator,
    records: mpsc::Sender<Record>,
) -> Vec<Duration> {
    let in_flight = Arc::new(Semaphore::new(settings.max_in_flight));
    let mut dropped = Vec::new();
    if clients.is_empty() {
        return dropped;
    }
    for planned in schedule {
        let due = settings.start + planned.at;
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped.push(planned.at);
            continue;
        };
        let client = clients[planned.seq as usize % clients.len()].clone();
        let values = values.clone();
        let records = records.clone();
        let limit = settings.timeout + REQUEST_GRACE;
        tokio::spawn(async move {
            let (outcome, message) =
                match tokio::time::timeout(limit, execute(&client, &planned, &values)).await {
                    Ok(Ok(())) => (Outcome::Ok, None),
                    Ok(Err(e)) => (Outcome::Error(classify(&e)), Some(e.to_string())),
                    Err(_) => (
                        Outcome::Error(super::timeline::ErrorKind::Timeout),
                        Some("no answer within the request timeout and its grace".to_owned()),
                    ),
                };
            // From when it was due, not when it was sent.
            let latency = due.elapsed();
            drop(permit);
            let _ = records
                .send(Record {
                    op: match planned.op {
                        Op::Get => OpKind::Read,
                        Op::Put | Op::Delete => OpKind::Write,
                    },
                    due: planned.at,
                    latency,
                    outcome,
                    message,
                })
                .await;
        });
    }
    dropped
}

async fn execute(client: &Client, planned: &Planned, values: &[u8]) -> Result<(), ClientError> {
    let key = key_name(planned.key);
    match planned.op {
        Op::Get => client.get(key.as_bytes()).await.map(|_| ()),
        Op::Put => {
            let len = (planned.value_bytes as usize).min(values.len());
            client.put(key.as_bytes(), &values[..len]).await.map(|_| ())
        }
        Op::Delete => client.delete(key.as_bytes()).await.map(|_| ()),
    }
}
