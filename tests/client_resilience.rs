//! The client under failure, with real processes: a frozen replica is
//! routed around and its circuit breaker opens; a dead cluster receives
//! retries bounded by the retry budget, not `max_attempts ×` the load.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestNode;
use common::cluster::{start_cluster, wait_for_members};
use common::runtime;
use levee_node::client::{BreakerState, Client, ClientConfig, Routing};
use levee_node::partition::partition_of;

fn client_for(nodes: &[&TestNode], config: ClientConfig) -> Client {
    Client::new(ClientConfig {
        endpoints: nodes.iter().map(|n| n.addr.clone()).collect(),
        ..config
    })
}

#[test]
fn a_stopped_replica_is_routed_around_and_its_breaker_opens() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3);
    wait_for_members(&nodes, 3);
    let rt = runtime();
    let map = rt.block_on(nodes[0].client().map()).unwrap();
    let first_replica = |key: &str| {
        let p = partition_of(key.as_bytes(), map.partitions) as usize;
        map.assignment[p].first().copied()
    };
    // The victim is the first choice of replica for some keys (with R = 3
    // on 3 nodes, placement may put the same node first everywhere).
    let victim_id = first_replica("k0").expect("k0 has replicas");
    let victim_addr = &map.nodes[&victim_id].spec.addr;
    let victim = nodes.iter().find(|n| &n.addr == victim_addr).unwrap();
    let others: Vec<&TestNode> = nodes.iter().filter(|n| &n.addr != victim_addr).collect();
    let client = client_for(
        // The map comes from the nodes that keep running.
        &others,
        ClientConfig {
            // A frozen node answers nothing; give up on it quickly.
            attempt_timeout: Duration::from_millis(300),
            breaker_failures: 3,
            // Long enough that the breaker is still open when checked.
            breaker_cooldown: Duration::from_secs(60),
            breaker_max_cooldown: Duration::from_secs(60),
            // The breaker is what is tested: every key below goes to the
            // victim first, as placement order says (load-aware routing
            // would move them away before the breaker had to).
            routing: Routing::PlacementOrder,
            ..common::certs::client_config()
        },
    );
    // Keys whose first choice of replica is the victim, so every one of
    // them meets it unless its breaker keeps them away.
    let keys: Vec<String> = (0..100_000)
        .map(|i| format!("k{i}"))
        .filter(|k| first_replica(k) == Some(victim_id))
        .take(12)
        .collect();
    assert_eq!(keys.len(), 12);
    rt.block_on(async {
        for key in &keys {
            client.put(key.as_bytes(), b"before").await.unwrap();
        }
    });
    assert_eq!(client.breaker_state(&victim.addr), BreakerState::Closed);

    let stopped = victim.stop();
    let started = Instant::now();
    rt.block_on(async {
        for key in &keys {
            client
                .put(key.as_bytes(), b"during")
                .await
                .unwrap_or_else(|e| panic!("put {key} with a replica frozen: {e}"));
            let read = client.get(key.as_bytes()).await.unwrap().expect("present");
            assert_eq!(read.value, b"during", "read-your-write on {key}");
        }
    });
    assert_eq!(
        client.breaker_state(&victim.addr),
        BreakerState::Open,
        "the frozen node's breaker opened"
    );
    assert_eq!(client.breaker_state(&others[0].addr), BreakerState::Closed);
    // Three attempts timed out on the frozen node, then it was skipped:
    // 24 operations cost about 3 × 300 ms, not 24 timeouts.
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "took {elapsed:?}: the open breaker should keep requests away"
    );
    drop(stopped);
}

#[test]
fn a_burst_against_a_dead_cluster_is_bounded_by_the_retry_budget() {
    const N: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    wait_for_members(&nodes, 3);
    let rt = runtime();
    let all: Vec<&TestNode> = nodes.iter().collect();
    let request_timeout = Duration::from_secs(2);
    // Placement order, so each request meets the replicas one by one and
    // its retries are what the budget has to stop. (Load-aware routing
    // spreads the first attempts over every replica, so all breakers open
    // together and later requests wait instead of retrying: fewer
    // attempts still, checked below, but the budget is not what bounds
    // them.)
    let budgeted = Arc::new(client_for(
        &all,
        ClientConfig {
            request_timeout,
            routing: Routing::PlacementOrder,
            ..common::certs::client_config()
        },
    ));
    let load_aware = Arc::new(client_for(
        &all,
        ClientConfig {
            request_timeout,
            ..common::certs::client_config()
        },
    ));
    // The same client without a budget or breakers, for contrast.
    let naive = Arc::new(client_for(
        &all,
        ClientConfig {
            request_timeout,
            retry_budget_ratio: 1e6,
            retry_budget_cap: 1e9,
            retry_budget_floor_per_sec: 1e9,
            breaker_failures: u32::MAX,
            routing: Routing::PlacementOrder,
            ..common::certs::client_config()
        },
    ));
    rt.block_on(async {
        budgeted.put(b"warm", b"up").await.unwrap();
        naive.put(b"warm", b"up").await.unwrap();
        load_aware.put(b"warm", b"up").await.unwrap();
    });
    for node in &mut nodes {
        node.kill();
    }

    let burst = |client: Arc<Client>| {
        let before = (client.requests(), client.attempts());
        let started = Instant::now();
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..N {
                let client = client.clone();
                tasks.spawn(async move { client.get(format!("k{i}").as_bytes()).await });
            }
            while let Some(result) = tasks.join_next().await {
                assert!(result.unwrap().is_err(), "nothing answers");
            }
        });
        let requests = client.requests() - before.0;
        let attempts = client.attempts() - before.1;
        assert_eq!(requests, N);
        (attempts, started.elapsed())
    };

    let (attempts, elapsed) = burst(budgeted.clone());
    let config = budgeted.config();
    // Retries: ratio × requests, plus the floor's one-second burst and its
    // refill over the burst, plus what the warm-up request earned.
    let bound_for = |elapsed: Duration| {
        N as f64 * (1.0 + config.retry_budget_ratio)
            + config.retry_budget_floor_per_sec * (1.0 + elapsed.as_secs_f64())
            + config.retry_budget_ratio
    };
    let bound = bound_for(elapsed);
    assert!(
        attempts as f64 <= bound,
        "{attempts} attempts for {N} requests in {elapsed:?} (bound {bound:.0})"
    );
    assert!(budgeted.budget_exhausted() > 0, "the budget ran out");
    assert!(
        elapsed < request_timeout + Duration::from_secs(2),
        "within the request timeout"
    );

    // The library's default routing: within the same bound.
    let (aware_attempts, aware_elapsed) = burst(load_aware.clone());
    let aware_bound = bound_for(aware_elapsed);
    assert!(
        aware_attempts as f64 <= aware_bound,
        "load-aware: {aware_attempts} attempts for {N} requests (bound {aware_bound:.0})"
    );

    let (naive_attempts, _) = burst(naive.clone());
    assert!(
        naive_attempts >= N * u64::from(naive.config().max_attempts) * 9 / 10,
        "without a budget, {naive_attempts} attempts for {N} requests"
    );
    eprintln!(
        "{N} requests to a dead cluster: {attempts} attempts with the budget, \
         {aware_attempts} with it and load-aware routing, {naive_attempts} without"
    );
}
