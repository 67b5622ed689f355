//! What a restart costs: after each `restart` fault the runner polls the
//! restarted node's `/metrics` until its startup phases
//! (`levee_startup_phase_seconds`, node/src/startup.rs) show the first
//! request served, and reads from them when storage was open, when the
//! node was ready and when it first served, in seconds from its process
//! start. The restart → first served time is measured from the moment the
//! runner spawned the process to `process_start_time_seconds +
//! first_served` (both wall clocks of this machine). Then the client p99
//! over the 10 s after the node was ready is set against the baseline
//! phase's. Fetching is [`watch`]; the rest is pure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use super::phases::{PhaseKind, PhaseSpan, PhaseSummary, summarise};
use super::prometheus::Scrape;
use super::server_figures::http_get_within;
use super::timeline::Bucket;
use levee_node::tls::Transport;

/// How long after the restart the runner keeps polling.
const DEADLINE: Duration = Duration::from_secs(30);
/// Time allowed for one `/metrics` request to a starting node.
const POLL_TIMEOUT: Duration = Duration::from_millis(300);
/// Pause between two polls.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Seconds after the node is ready whose p99 is compared to the baseline.
pub const REJOIN_WINDOW_S: u64 = 10;

const PHASE: &str = "levee_startup_phase_seconds";

/// One restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RestartFigures {
    /// The node (1-based).
    pub node: u8,
    /// When the runner spawned it (s since the start of the measured run).
    pub restart_t_s: f64,
    /// Whether the node said it started on existing data.
    pub on_existing_data: Option<bool>,
    /// Storage open, s from process start.
    pub storage_open_s: Option<f64>,
    /// Ready, s from process start.
    pub ready_s: Option<f64>,
    /// First request served, s from process start.
    pub first_served_s: Option<f64>,
    /// From the spawn to the first request served (wall clocks).
    pub restart_to_first_served_s: Option<f64>,
    /// When it was ready, s since the start of the measured run.
    pub ready_t_s: Option<f64>,
    /// Client p99 over the [`REJOIN_WINDOW_S`] seconds after ready (ms).
    pub p99_after_ready_ms: Option<f64>,
    /// The baseline phase's p99 (ms).
    pub baseline_p99_ms: Option<f64>,
    /// The first over the second.
    pub p99_after_ready_vs_baseline: Option<f64>,
    /// Why figures are missing, if they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The restarts of a run, shared by the fault task and its watchers.
pub type Restarts = Arc<Mutex<Vec<RestartFigures>>>;

/// A node's startup, as its `/metrics` tell it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Startup {
    pub storage_open_s: Option<f64>,
    pub ready_s: Option<f64>,
    pub first_served_s: Option<f64>,
    pub process_start_unix_s: Option<f64>,
    pub restart: Option<bool>,
}

impl Startup {
    /// Reads the startup samples of one scrape.
    pub fn of(scrape: &Scrape) -> Self {
        let one = |name: &str, filter: &[(&str, &str)]| {
            scrape
                .samples
                .iter()
                .find(|s| {
                    s.name == name
                        && filter
                            .iter()
                            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|s| s.value)
        };
        Self {
            storage_open_s: one(PHASE, &[("phase", "storage_open")]),
            ready_s: one(PHASE, &[("phase", "ready")]),
            first_served_s: one(PHASE, &[("phase", "first_served")]),
            process_start_unix_s: one("process_start_time_seconds", &[]),
            restart: one("levee_startup_restart", &[]).map(|v| v > 0.5),
        }
    }

    /// The figures of a restart spawned at `restart_t_s` of the run
    /// (`restart_unix_s` on the wall clock).
    pub fn figures(&self, node: u8, restart_t_s: f64, restart_unix_s: f64) -> RestartFigures {
        // Both clocks are this machine's; the process start is rounded to
        // the millisecond, so a spawn-to-start gap below it reads as 0.
        let since_spawn = |phase: Option<f64>| {
            let start = self.process_start_unix_s?;
            Some((start - restart_unix_s).max(0.0) + phase?)
        };
        RestartFigures {
            node,
            restart_t_s,
            on_existing_data: self.restart,
            storage_open_s: self.storage_open_s,
            ready_s: self.ready_s,
            first_served_s: self.first_served_s,
            restart_to_first_served_s: since_spawn(self.first_served_s),
            ready_t_s: since_spawn(self.ready_s).map(|s| restart_t_s + s),
            ..RestartFigures::default()
        }
    }
}

/// Polls node `node`'s admin address after its restart until it has
/// served a first request (or [`DEADLINE`] passes), then records it.
pub async fn watch(
    admin: String,
    transport: Transport,
    node: u8,
    restart_t_s: f64,
    restart_unix: SystemTime,
    out: Restarts,
) {
    let restart_unix_s = restart_unix
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let deadline = Instant::now() + DEADLINE;
    let mut last = Startup::default();
    let mut problem = "never answered /metrics".to_owned();
    while Instant::now() < deadline {
        match http_get_within(&admin, "/metrics", POLL_TIMEOUT, &transport).await {
            Ok(text) => {
                last = Startup::of(&Scrape::parse(&text));
                if last.first_served_s.is_some() {
                    break;
                }
                problem = "no first request served within 30 s".to_owned();
            }
            Err(e) => {
                if last.process_start_unix_s.is_none() {
                    problem = format!("{e:#}");
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let mut f = last.figures(node, restart_t_s, restart_unix_s);
    if f.first_served_s.is_none() {
        f.problem = Some(problem);
    }
    eprintln!("levee bench: {}", line(&f));
    out.lock().unwrap_or_else(|e| e.into_inner()).push(f);
}

/// Adds to each restart the client p99 over the seconds after it was
/// ready, against the baseline phase (the first of `phases`).
pub fn with_rejoin_p99(
    mut restarts: Vec<RestartFigures>,
    buckets: &[Bucket],
    phases: &[PhaseSummary],
) -> Vec<RestartFigures> {
    let Some(base) = phases.first() else {
        return restarts;
    };
    for r in &mut restarts {
        let Some(ready) = r.ready_t_s else { continue };
        // Whole seconds from the one after `ready`: the second holding it
        // also holds the node's absence.
        let from_s = ready.floor() as u64 + 1;
        let to_s = (from_s + REJOIN_WINDOW_S).min(buckets.len() as u64);
        if to_s <= from_s {
            continue;
        }
        let spans = [
            PhaseSpan {
                kind: base.kind,
                from_s: base.from_s,
                to_s: base.to_s,
                multiple: None,
            },
            PhaseSpan {
                kind: PhaseKind::AfterFault,
                from_s,
                to_s,
                multiple: None,
            },
        ];
        let s = summarise(buckets, &spans, None);
        r.baseline_p99_ms = s[0].p99_ms;
        r.p99_after_ready_ms = s[1].p99_ms;
        r.p99_after_ready_vs_baseline = s[1].vs_baseline.p99;
    }
    restarts
}

/// The largest of a figure over the restarts; `None` without restarts or
/// when one of them lacks it (a missing figure must not pass a target).
pub fn worst(restarts: &[RestartFigures], get: fn(&RestartFigures) -> Option<f64>) -> Option<f64> {
    if restarts.is_empty() {
        return None;
    }
    restarts
        .iter()
        .map(get)
        .try_fold(f64::MIN, |acc, v| v.map(|v| acc.max(v)))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |s| format!("{:.0} ms", s * 1000.0))
}

/// One line per restart, for stdout.
pub fn line(r: &RestartFigures) -> String {
    format!(
        "node {} restarted at {:.1} s: storage open {}, ready {}, first served {} (from process start); restart → first served {}{}",
        r.node,
        r.restart_t_s,
        ms(r.storage_open_s),
        ms(r.ready_s),
        ms(r.first_served_s),
        ms(r.restart_to_first_served_s),
        r.problem
            .as_ref()
            .map_or(String::new(), |p| format!(" ({p})")),
    )
}

/// The restarts as a markdown section; empty without any.
pub fn section(restarts: &[RestartFigures]) -> String {
    if restarts.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n## Restarts\n\n\
         | node | at | storage open | ready | first served | restart → first served | p99 10 s after ready | baseline p99 | ratio |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let p = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1} ms"));
    for r in restarts {
        out.push_str(&format!(
            "| {} | {:.1} s | {} | {} | {} | {} | {} | {} | {} |\n",
            r.node,
            r.restart_t_s,
            ms(r.storage_open_s),
            ms(r.ready_s),
            ms(r.first_served_s),
            ms(r.restart_to_first_served_s),
            p(r.p99_after_ready_ms),
            p(r.baseline_p99_ms),
            r.p99_after_ready_vs_baseline
                .map_or("–".to_owned(), |v| format!("×{v:.2}")),
        ));
    }
    out.push_str(
        "\nStorage open, ready and first served are times from the node's process start (its `levee_startup_phase_seconds`); restart → first served runs from the runner's spawn to `process_start_time_seconds + first_served`. The p99 is the clients', over the 10 whole seconds after the second the node became ready.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE levee_startup_phase_seconds gauge
levee_startup_phase_seconds{phase=\"admin_listening\"} 0.002000
levee_startup_phase_seconds{phase=\"storage_open\"} 0.027000
levee_startup_phase_seconds{phase=\"ready\"} 0.029000
levee_startup_phase_seconds{phase=\"first_served\"} 0.033000
levee_startup_restart 1
process_start_time_seconds 1000.010
";

    #[test]
    fn startup_phases_are_read_and_timed_from_the_spawn() {
        let s = Startup::of(&Scrape::parse(METRICS));
        assert_eq!(s.storage_open_s, Some(0.027));
        assert_eq!(s.restart, Some(true));
        let f = s.figures(2, 20.0, 1000.0);
        assert!((f.restart_to_first_served_s.unwrap() - 0.043).abs() < 1e-9);
        assert!((f.ready_t_s.unwrap() - 20.039).abs() < 1e-9);
        // Not served yet: no figure.
        let early = Startup::of(&Scrape::parse(
            "levee_startup_phase_seconds{phase=\"admin_listening\"} 0.002\nprocess_start_time_seconds 1000.0\n",
        ));
        assert_eq!(
            early.figures(2, 20.0, 1000.0).restart_to_first_served_s,
            None
        );
    }

    #[test]
    fn the_worst_restart_counts_and_a_missing_figure_is_none() {
        let r = |v| RestartFigures {
            restart_to_first_served_s: v,
            ..RestartFigures::default()
        };
        let get = |r: &RestartFigures| r.restart_to_first_served_s;
        assert_eq!(worst(&[], get), None);
        assert_eq!(worst(&[r(Some(0.1)), r(Some(0.3))], get), Some(0.3));
        assert_eq!(worst(&[r(Some(0.1)), r(None)], get), None);
    }

    #[test]
    fn the_rejoin_p99_is_over_the_seconds_after_ready() {
        use super::super::phases::spans;
        use super::super::timeline::{Outcome, Timeline};
        let mut t = Timeline::new(40);
        for s in 0..40u64 {
            // 1 ms before the fault, 5 ms for 10 s after the node is ready
            // at 20.5 s, 1 ms again after.
            let ms = if (21..31).contains(&s) { 5 } else { 1 };
            for _ in 0..100 {
                t.record(
                    Duration::from_secs(s),
                    Duration::from_millis(ms),
                    Outcome::Ok,
                );
            }
        }
        let phases = summarise(t.buckets(), &spans(40, 0, &[15.0, 20.0]), None);
        let r = RestartFigures {
            ready_t_s: Some(20.5),
            ..RestartFigures::default()
        };
        let r = &with_rejoin_p99(vec![r], t.buckets(), &phases)[0];
        let ratio = r.p99_after_ready_vs_baseline.unwrap();
        assert!((4.5..5.5).contains(&ratio), "{r:?}");
        assert!(section(std::slice::from_ref(r)).contains("| ×"), "{r:?}");
    }
}
