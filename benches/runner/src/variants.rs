//! Settings compared in one run. A scenario's `[[variants]]` each name a
//! few changes (node flags appended, the client's retry policy and
//! routing); the runner runs the whole scenario once per variant, one
//! after another, each on a fresh cluster, so the variants differ in those
//! settings and in nothing else (same machine, same minutes, same seeded
//! load).
//!
//! Also here: the client settings of the load generator, since that is
//! what a variant's client half changes.

use std::time::Duration;

use anyhow::bail;
use levee_node::client::{ClientConfig, Routing};
use serde::{Deserialize, Serialize};

use super::scenario::{Scenario, Workload};

/// A budget or floor large enough never to run out, yet finite: the
/// retry budget treats a non-finite setting as 0 (no retries at all).
const UNLIMITED: f64 = 1e12;

/// How the load generator's clients retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryPolicy {
    /// The client library's defaults: a retry budget (about 10% of
    /// requests), a circuit breaker per node, jittered backoff.
    #[default]
    Budget,
    /// What a client without those does: every failure is retried at once
    /// on the next replica, up to `max_attempts`, however many fail, and
    /// no request is held back by the adaptive throttle. It still honours
    /// a node's `Overloaded { retry_after_ms }` (that is not a setting of
    /// the client).
    Naive,
}

impl RetryPolicy {
    /// Lower-case name, as in the scenario file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Budget => "budget",
            Self::Naive => "naive",
        }
    }

    /// Sets the client's retry settings for this policy.
    pub fn apply(self, config: &mut ClientConfig) {
        match self {
            Self::Budget => {}
            Self::Naive => {
                config.retry_budget_ratio = UNLIMITED;
                config.retry_budget_cap = UNLIMITED;
                config.retry_budget_floor_per_sec = UNLIMITED;
                config.breaker_failures = u32::MAX;
                config.backoff_base = Duration::ZERO;
                config.backoff_cap = Duration::ZERO;
                config.throttle_k = 0.0;
                config.overload_retry_below = 1.0;
            }
        }
    }
}

/// Which replica of a key the load generator's clients ask first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingPolicy {
    /// The client library's default: by each node's latency and pressure
    /// as the client has seen them, so a slow node loses its share.
    #[default]
    LoadAware,
    /// The first Up replica in placement order: what levee did before
    /// load-aware routing, kept to measure what it saves.
    Placement,
}

impl RoutingPolicy {
    /// Lower-case name, as in the scenario file.
    pub fn name(self) -> &'static str {
        match self {
            Self::LoadAware => "load_aware",
            Self::Placement => "placement",
        }
    }

    /// The client's routing for this policy.
    pub fn routing(self) -> Routing {
        match self {
            Self::LoadAware => Routing::LoadAware,
            Self::Placement => Routing::PlacementOrder,
        }
    }
}

/// One setting of the scenario to compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Short name: the column in the comparison and the subdirectory of
    /// its reports (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// One line on what differs.
    #[serde(default)]
    pub description: String,
    /// `levee-node` flags appended to `cluster.node_flags` (a later flag
    /// wins), e.g. `["--admission", "off"]`.
    #[serde(default)]
    pub node_flags: Vec<String>,
    /// Replaces `workload.retry`.
    pub retry: Option<RetryPolicy>,
    /// Replaces `workload.routing`.
    pub routing: Option<RoutingPolicy>,
    /// Replaces `workload.max_attempts`.
    pub max_attempts: Option<u32>,
    /// Replaces `workload.attempt_timeout_ms`.
    pub attempt_timeout_ms: Option<u64>,
    /// Replaces `workload.throttle_k`.
    pub throttle_k: Option<f64>,
    /// Replaces `workload.overload_retry_below`.
    pub overload_retry_below: Option<f64>,
    /// Replaces `cluster.tls`: the cluster with mutual TLS or plaintext.
    pub tls: Option<bool>,
}

impl Scenario {
    /// The scenario as one variant runs it: its node flags appended, its
    /// client settings in the workload, no variants left.
    pub fn for_variant(&self, variant: &Variant) -> Scenario {
        let mut s = self.clone();
        s.cluster
            .node_flags
            .extend(variant.node_flags.iter().cloned());
        let w = &mut s.workload;
        w.retry = variant.retry.unwrap_or(w.retry);
        w.routing = variant.routing.unwrap_or(w.routing);
        w.max_attempts = variant.max_attempts.or(w.max_attempts);
        w.attempt_timeout_ms = variant.attempt_timeout_ms.or(w.attempt_timeout_ms);
        w.throttle_k = variant.throttle_k.or(w.throttle_k);
        w.overload_retry_below = variant.overload_retry_below.or(w.overload_retry_below);
        s.cluster.tls = variant.tls.unwrap_or(s.cluster.tls);
        s.variants.clear();
        s
    }

    /// Variant names are distinct directory names; node flags need local
    /// processes.
    pub(super) fn validate_variants(&self) -> anyhow::Result<()> {
        for (i, v) in self.variants.iter().enumerate() {
            let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if v.name.is_empty() || v.name.starts_with('.') || !v.name.chars().all(safe) {
                bail!(
                    "variants[{i}].name {:?}: use letters, digits, '-', '_' or '.' (it names a directory)",
                    v.name
                );
            }
            if self.variants[..i].iter().any(|o| o.name == v.name) {
                bail!("variants: the name {:?} is used twice", v.name);
            }
            if !v.node_flags.is_empty() && !self.is_local() {
                bail!(
                    "variants[{i}] ({}): node_flags configure local processes; an existing cluster (endpoints) keeps its own settings",
                    v.name
                );
            }
            if v.tls.is_some() && !self.is_local() {
                bail!(
                    "variants[{i}] ({}): tls configures local processes; an existing cluster keeps its own",
                    v.name
                );
            }
            if v.throttle_k.is_some_and(|k| !(k.is_finite() && k >= 0.0)) {
                bail!(
                    "variants[{i}] ({}): throttle_k must be a number ≥ 0 (0 turns the throttle off)",
                    v.name
                );
            }
            if v.overload_retry_below
                .is_some_and(|b| !(b.is_finite() && b >= 0.0))
            {
                bail!(
                    "variants[{i}] ({}): overload_retry_below must be a number ≥ 0 (1 retries always)",
                    v.name
                );
            }
            if v.max_attempts == Some(0) || v.attempt_timeout_ms == Some(0) {
                bail!(
                    "variants[{i}] ({}): max_attempts and attempt_timeout_ms must be at least 1",
                    v.name
                );
            }
        }
        Ok(())
    }
}

/// The settings of load-generator client number `index`: all endpoints,
/// starting at a different one per instance so the map fetches do not all
/// land on node 1; the workload's timeouts, attempts, retry policy and
/// routing.
pub fn client_config(workload: &Workload, endpoints: &[String], index: usize) -> ClientConfig {
    let timeout = Duration::from_millis(workload.request_timeout_ms);
    let mut endpoints = endpoints.to_vec();
    if !endpoints.is_empty() {
        let len = endpoints.len();
        endpoints.rotate_left(index % len);
    }
    let defaults = ClientConfig::default();
    let mut config = ClientConfig {
        endpoints,
        // A node that cannot handshake within the request timeout (or 1 s)
        // is better skipped for the next replica.
        connect_timeout: timeout.min(Duration::from_secs(1)),
        request_timeout: timeout,
        attempt_timeout: workload
            .attempt_timeout_ms
            .map_or(defaults.attempt_timeout, Duration::from_millis),
        max_attempts: workload.max_attempts.unwrap_or(defaults.max_attempts),
        routing: workload.routing.routing(),
        throttle_k: workload.throttle_k.unwrap_or(defaults.throttle_k),
        overload_retry_below: workload
            .overload_retry_below
            .unwrap_or(defaults.overload_retry_below),
        ..defaults
    };
    workload.retry.apply(&mut config);
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::tests::REMOTE;

    const BASE: &str = r#"
        [cluster]
        nodes = 3
        node_flags = ["--raft-heartbeat-ms", "100"]
        [workload]
        rate = 100
        duration_s = 10
        keys = 1000
        max_attempts = 4
    "#;

    fn with(variants: &str) -> anyhow::Result<Scenario> {
        Scenario::parse(&format!("{BASE}\n{variants}"))
    }

    #[test]
    fn a_variant_appends_node_flags_and_replaces_client_settings() {
        let s = with(
            r#"
            [[variants]]
            name = "on"
            throttle_k = 1.1
            overload_retry_below = 1.0
            [[variants]]
            name = "off"
            node_flags = ["--admission", "off"]
            retry = "naive"
            routing = "placement"
            attempt_timeout_ms = 200
            "#,
        )
        .unwrap();
        let on = s.for_variant(&s.variants[0]);
        assert_eq!(on.cluster.node_flags, ["--raft-heartbeat-ms", "100"]);
        assert_eq!(on.workload.retry, RetryPolicy::Budget);
        assert_eq!(on.workload.routing, RoutingPolicy::LoadAware);
        assert!(on.variants.is_empty());
        let off = s.for_variant(&s.variants[1]);
        assert_eq!(
            off.cluster.node_flags,
            ["--raft-heartbeat-ms", "100", "--admission", "off"]
        );
        assert_eq!(off.workload.retry, RetryPolicy::Naive);
        assert_eq!(off.workload.routing, RoutingPolicy::Placement);
        assert_eq!(off.workload.max_attempts, Some(4), "kept from the workload");
        assert_eq!(off.workload.attempt_timeout_ms, Some(200));
        assert_eq!(on.workload.throttle_k, Some(1.1));
        assert_eq!(off.workload.throttle_k, None);
        let endpoints = ["a:1".to_owned()];
        assert_eq!(client_config(&on.workload, &endpoints, 0).throttle_k, 1.1);
        assert_eq!(
            client_config(&on.workload, &endpoints, 0).overload_retry_below,
            1.0
        );
        // Naive retries every refusal, overloaded or not.
        assert_eq!(
            client_config(&off.workload, &endpoints, 0).overload_retry_below,
            1.0
        );
        let mut budget = off.workload.clone();
        budget.retry = RetryPolicy::Budget;
        assert_eq!(
            client_config(&budget, &endpoints, 0).throttle_k,
            ClientConfig::default().throttle_k
        );
    }

    #[test]
    fn variant_names_must_be_distinct_directory_names() {
        let twice = "[[variants]]\nname = \"a\"\n[[variants]]\nname = \"a\"\n";
        let err = with(twice).unwrap_err().to_string();
        assert!(err.contains("used twice"), "{err}");
        for bad in ["", "../x", "a b", ".hidden"] {
            let text = format!("[[variants]]\nname = {bad:?}\n");
            assert!(with(&text).is_err(), "{bad:?} accepted");
        }
        for unknown in [
            "retry = \"sometimes\"",
            "routing = \"random\"",
            "throttle_k = -1.0",
            "overload_retry_below = -0.5",
        ] {
            let text = format!("[[variants]]\nname = \"a\"\n{unknown}\n");
            assert!(with(&text).is_err(), "{unknown} accepted");
        }
    }

    #[test]
    fn node_flags_of_a_variant_need_local_processes() {
        let text = format!(
            "{REMOTE}\n[[variants]]\nname = \"off\"\nnode_flags = [\"--admission\", \"off\"]\n"
        );
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(err.contains("local processes"), "{err}");
    }

    #[test]
    fn the_naive_client_has_no_budget_breaker_or_backoff() {
        let s = with("").unwrap();
        let mut w = s.workload.clone();
        let endpoints = ["a:1".to_owned(), "b:1".to_owned(), "c:1".to_owned()];
        let budget = client_config(&w, &endpoints, 1);
        assert_eq!(budget.endpoints, ["b:1", "c:1", "a:1"]);
        assert_eq!(budget.max_attempts, 4);
        assert_eq!(
            budget.retry_budget_ratio,
            ClientConfig::default().retry_budget_ratio
        );
        assert_eq!(budget.request_timeout, Duration::from_secs(1));
        assert_eq!(
            budget.attempt_timeout,
            ClientConfig::default().attempt_timeout
        );
        assert_eq!(budget.routing, Routing::LoadAware);

        w.retry = RetryPolicy::Naive;
        w.routing = RoutingPolicy::Placement;
        w.attempt_timeout_ms = Some(250);
        let naive = client_config(&w, &endpoints, 0);
        assert_eq!(naive.routing, Routing::PlacementOrder);
        assert_eq!(naive.attempt_timeout, Duration::from_millis(250));
        assert_eq!(naive.breaker_failures, u32::MAX);
        assert_eq!(naive.backoff_cap, Duration::ZERO);
        assert!(naive.retry_budget_ratio >= 1.0 && naive.retry_budget_ratio.is_finite());
        assert!(naive.retry_budget_floor_per_sec.is_finite());
    }
}
