use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;
use crate::proto::handshake::HandshakeError;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const PEER: &str = "10.0.0.3:7400";

/// The client's defaults: 5 timeouts in a row open a breaker for 1 s,
/// doubling (to 4 s for peers); retries 10% of calls, 20 saved, 10/s
/// floor.
fn config() -> GuardConfig {
    GuardConfig::of(&ClientConfig::default(), true)
}

fn guard(t0: Instant) -> PeerGuard {
    PeerGuard::new(config(), t0)
}

/// Sends a call to `PEER` at `now` and records `verdict` for it if it
/// went; returns whether it went.
fn call(g: &mut PeerGuard, verdict: Verdict, now: Instant) -> bool {
    match g.admit(PEER, now) {
        Admit::Go { probe } => {
            g.record(PEER, verdict, probe, now);
            true
        }
        Admit::Refused { .. } => false,
    }
}

/// A guard whose breaker for `PEER` opened at `t0`.
fn opened(t0: Instant) -> PeerGuard {
    let mut g = guard(t0);
    for _ in 0..5 {
        assert!(call(&mut g, Verdict::TimedOut, t0));
    }
    g
}

#[test]
fn timeouts_in_a_row_open_the_breaker_and_calls_are_refused_until_the_cooldown() {
    let t0 = Instant::now();
    let mut g = guard(t0);
    for _ in 0..4 {
        assert!(call(&mut g, Verdict::TimedOut, t0));
    }
    assert_eq!(g.counts(t0), Counts::default(), "four are not enough");
    let Admit::Go { probe: false } = g.admit(PEER, t0) else {
        panic!("the fifth call goes")
    };
    assert_eq!(
        g.record(PEER, Verdict::TimedOut, false, t0),
        Some(Change::Opened)
    );
    assert_eq!(
        g.counts(t0),
        Counts {
            open: 1,
            half_open: 0
        }
    );
    assert_eq!(
        g.admit(PEER, t0 + S / 4),
        Admit::Refused {
            retry_in: S * 3 / 4
        }
    );
    assert!(!g.is_available(PEER, t0 + S / 4));
    assert!(
        g.is_available("10.0.0.4:7400", t0),
        "other peers unaffected"
    );
}

#[test]
fn an_answer_between_timeouts_keeps_the_breaker_closed() {
    let t0 = Instant::now();
    let mut g = guard(t0);
    for round in 0..10 {
        for _ in 0..4 {
            assert!(call(&mut g, Verdict::TimedOut, t0), "round {round}");
        }
        assert!(call(&mut g, Verdict::Answered, t0));
    }
    assert_eq!(g.counts(t0), Counts::default());
}

#[test]
fn overloaded_answers_never_open_a_breaker() {
    let t0 = Instant::now();
    let mut g = guard(t0);
    let overloaded = Err(ClientError::Server(WireError::Overloaded {
        retry_after_ms: 50,
    }));
    assert_eq!(judge(&overloaded), Verdict::Answered);
    for i in 0..100 {
        assert!(call(&mut g, judge(&overloaded), t0 + i * MS));
    }
    assert_eq!(g.counts(t0 + S), Counts::default());
}

#[test]
fn fast_failures_neither_open_nor_close_a_breaker() {
    let t0 = Instant::now();
    let mut g = guard(t0);
    // A peer killed and restarting: its connections are refused, at once,
    // for as long as it takes; it is called again as soon as it listens.
    for i in 0..1000 {
        assert!(call(&mut g, Verdict::FailedFast, t0 + i * MS), "call {i}");
    }
    assert_eq!(g.counts(t0 + S), Counts::default());
    // Nor do they reset a run of timeouts.
    for _ in 0..4 {
        assert!(call(&mut g, Verdict::TimedOut, t0));
        assert!(call(&mut g, Verdict::FailedFast, t0));
    }
    assert!(call(&mut g, Verdict::TimedOut, t0));
    assert_eq!(g.counts(t0).open, 1);
}

#[test]
fn a_half_open_breaker_lets_one_probe_whose_answer_closes_it() {
    let t0 = Instant::now();
    let mut g = opened(t0);
    let t1 = t0 + S;
    assert_eq!(
        g.counts(t1),
        Counts {
            open: 0,
            half_open: 1
        }
    );
    assert_eq!(g.admit(PEER, t1), Admit::Go { probe: true });
    assert!(
        matches!(g.admit(PEER, t1), Admit::Refused { .. }),
        "one probe at a time"
    );
    assert_eq!(
        g.record(PEER, Verdict::Answered, true, t1),
        Some(Change::Closed)
    );
    assert_eq!(g.counts(t1), Counts::default());
    assert_eq!(g.admit(PEER, t1), Admit::Go { probe: false });
}

#[test]
fn a_probe_that_times_out_reopens_for_twice_as_long() {
    let t0 = Instant::now();
    let mut g = opened(t0);
    let mut now = t0 + S;
    for cooldown in [2 * S, 4 * S, 4 * S, 4 * S] {
        assert_eq!(g.admit(PEER, now), Admit::Go { probe: true });
        assert_eq!(g.record(PEER, Verdict::TimedOut, true, now), None);
        assert_eq!(g.admit(PEER, now), Admit::Refused { retry_in: cooldown });
        now += cooldown;
    }
}

#[test]
fn a_probe_that_fails_fast_or_is_abandoned_frees_the_next_probe() {
    let t0 = Instant::now();
    let t1 = t0 + S;
    for abandon in [false, true] {
        let mut g = opened(t0);
        assert_eq!(g.admit(PEER, t1), Admit::Go { probe: true });
        if abandon {
            g.abandoned(PEER, true);
        } else {
            g.record(PEER, Verdict::FailedFast, true, t1);
        }
        assert_eq!(g.admit(PEER, t1), Admit::Go { probe: true });
    }
    // A call that was not the probe frees nothing.
    let mut g = opened(t0);
    assert_eq!(g.admit(PEER, t1), Admit::Go { probe: true });
    g.abandoned(PEER, false);
    assert!(matches!(g.admit(PEER, t1), Admit::Refused { .. }));
}

#[test]
fn with_breakers_off_every_call_goes() {
    let t0 = Instant::now();
    let mut g = PeerGuard::new(
        GuardConfig {
            breakers: false,
            ..config()
        },
        t0,
    );
    for i in 0..100 {
        assert!(call(&mut g, Verdict::TimedOut, t0 + i * MS));
    }
    assert_eq!(g.counts(t0 + S), Counts::default());
    assert!(g.is_available(PEER, t0));
}

#[test]
fn retries_are_paid_by_calls_sent_and_the_floor() {
    let t0 = Instant::now();
    let mut g = guard(t0);
    let granted = |g: &mut PeerGuard, now| (0..1000).filter(|_| g.try_retry(now)).count();
    assert_eq!(granted(&mut g, t0), 10, "the floor's burst: 10/s");
    for _ in 0..100 {
        assert!(call(&mut g, Verdict::Answered, t0));
    }
    assert_eq!(granted(&mut g, t0), 10, "10% of 100 calls");
    for _ in 0..100 {
        let _ = g.admit(PEER, t0);
    }
    assert_eq!(
        g.counts(t0),
        Counts::default(),
        "admitted calls not recorded change no breaker"
    );
    assert_eq!(granted(&mut g, t0 + S / 2), 15, "10 earned + 5 of floor");
    // A refused call is not sent and earns nothing.
    let mut g = opened(t0);
    assert_eq!(granted(&mut g, t0), 10, "floor only");
    for _ in 0..100 {
        assert!(matches!(g.admit(PEER, t0), Admit::Refused { .. }));
    }
    assert_eq!(granted(&mut g, t0), 0);
}

#[test]
fn verdicts_blame_a_peer_only_for_what_cost_a_timeout() {
    let addr = || PEER.to_owned();
    let server = |e| Err(ClientError::Server(e));
    let cases = [
        (Ok(Response::Ack), Verdict::Answered),
        (
            server(WireError::Overloaded { retry_after_ms: 5 }),
            Verdict::Answered,
        ),
        (server(WireError::StaleMap { epoch: 3 }), Verdict::Answered),
        (server(WireError::DeadlineExceeded), Verdict::TimedOut),
        (server(WireError::ShuttingDown), Verdict::FailedFast),
        (
            server(WireError::Unavailable {
                detail: "starting".into(),
            }),
            Verdict::FailedFast,
        ),
        (
            Err(ClientError::Timeout {
                addr: addr(),
                after: S,
            }),
            Verdict::TimedOut,
        ),
        (
            Err(ClientError::ConnectTimeout {
                addr: addr(),
                after: S / 2,
            }),
            Verdict::TimedOut,
        ),
        (
            Err(ClientError::HeldOff {
                addr: addr(),
                remaining: S / 4,
            }),
            Verdict::FailedFast,
        ),
        (
            Err(ClientError::Handshake {
                addr: addr(),
                error: HandshakeError::Timeout(S / 2),
            }),
            Verdict::TimedOut,
        ),
        (
            Err(ClientError::Connect {
                addr: addr(),
                error: std::io::ErrorKind::ConnectionRefused.into(),
            }),
            Verdict::FailedFast,
        ),
        (
            Err(ClientError::ConnectionClosed {
                addr: addr(),
                reason: None,
            }),
            Verdict::FailedFast,
        ),
    ];
    for (result, want) in cases {
        assert_eq!(judge(&result), want, "{result:?}");
    }
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        Just(Verdict::Answered),
        Just(Verdict::TimedOut),
        Just(Verdict::FailedFast),
    ]
}

proptest! {
    /// A call is refused only when the peer's last five recorded timeouts
    /// came with no answer in between: one answer keeps it in rotation.
    #[test]
    fn a_peer_is_refused_only_after_five_timeouts_with_no_answer_between(
        events in proptest::collection::vec((0u64..400, verdict()), 1..300),
    ) {
        let t0 = Instant::now();
        let mut g = guard(t0);
        let mut now = t0;
        let mut timeouts_since_answer = 0u32;
        for (advance_ms, verdict) in events {
            now += Duration::from_millis(advance_ms);
            match g.admit(PEER, now) {
                Admit::Go { probe } => {
                    g.record(PEER, verdict, probe, now);
                    match verdict {
                        Verdict::Answered => timeouts_since_answer = 0,
                        Verdict::TimedOut => timeouts_since_answer += 1,
                        Verdict::FailedFast => {}
                    }
                }
                Admit::Refused { retry_in } => {
                    prop_assert!(timeouts_since_answer >= 5,
                        "refused after {} timeouts", timeouts_since_answer);
                    prop_assert!(retry_in <= MAX_COOLDOWN);
                }
            }
        }
    }

    /// A dead peer (every call times out after `timeout`) is sent the
    /// calls made before five of them have timed out, then probes: at
    /// most two per second (a probe still out after its cool-down lets
    /// one more through, and cool-downs are ≥ 1 s). Over two minutes of
    /// calls every `step`, that is all it costs, however fast they come.
    #[test]
    fn a_dead_peer_costs_its_first_timeouts_then_one_probe_per_cooldown(
        step_ms in 1u64..50,
        timeout_ms in 1u64..2000,
    ) {
        let t0 = Instant::now();
        let mut g = guard(t0);
        let (step, timeout) = (Duration::from_millis(step_ms), Duration::from_millis(timeout_ms));
        let run = Duration::from_secs(120);
        let mut out: VecDeque<(Instant, bool)> = VecDeque::new();
        let mut sent = 0u64;
        let mut now = t0;
        while now < t0 + run {
            while let Some(&(at, probe)) = out.front().filter(|(at, _)| *at <= now) {
                g.record(PEER, Verdict::TimedOut, probe, at);
                out.pop_front();
            }
            if let Admit::Go { probe } = g.admit(PEER, now) {
                sent += 1;
                out.push_back((now + timeout, probe));
            }
            now += step;
        }
        let first = 5 + timeout_ms / step_ms + 1;
        let probes = 2 * (run.as_secs() + 1);
        prop_assert!(sent <= first + probes,
            "{} calls sent; bound {} first + {} probes", sent, first, probes);
    }
}
