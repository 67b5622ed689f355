//! The offered load, decided before it is sent: when each request is due
//! (a constant rate, a linear ramp or steps), which operation, which key
//! (uniform or zipfian) and how large a value. Pure: no clock, no I/O, a
//! seeded generator, so two runs of a scenario offer the same requests at
//! the same offsets.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::scenario::{KeyDistribution, Mix, ValueSize, Workload};

/// Target rate over the run: linear from `from` to `to` ops/s over
/// `duration_s` (constant when equal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateProfile {
    /// Rate at t = 0 (ops/s).
    pub from: f64,
    /// Rate at t = duration (ops/s).
    pub to: f64,
    /// Length of the run (s).
    pub duration_s: f64,
}

impl RateProfile {
    /// The target rate at `t` seconds.
    #[cfg(test)]
    pub fn rate_at(&self, t: f64) -> f64 {
        self.from + (self.to - self.from) * (t / self.duration_s)
    }

    /// When the `n`-th request (0-based) is due: the `t` where the
    /// requests due so far, `from·t + (to − from)·t² / 2d` (the integral of
    /// the rate), reach `n`. `None` past the end of the run.
    pub fn time_of(&self, n: u64) -> Option<f64> {
        if n == 0 {
            return Some(0.0);
        }
        let n = n as f64;
        let a = (self.to - self.from) / (2.0 * self.duration_s);
        let b = self.from;
        let disc = b * b + 4.0 * a * n;
        if disc < 0.0 {
            return None;
        }
        // The root of a·t² + b·t − n written as 2n / (b + √disc): stable
        // when a is 0 (constant rate) or tiny, where the textbook form
        // divides by ~0.
        let denominator = b + disc.sqrt();
        if denominator <= 0.0 {
            return None;
        }
        let t = 2.0 * n / denominator;
        (t < self.duration_s).then_some(t)
    }
}

/// Constant rates held one after another, `step_s` each: the load of an
/// overload scenario (steps of a measured peak).
#[derive(Debug, Clone, PartialEq)]
pub struct StepProfile {
    /// The rate of each step (ops/s).
    pub rates: Vec<f64>,
    /// Length of every step (s).
    pub step_s: f64,
}

impl StepProfile {
    /// When the `n`-th request (0-based) is due: evenly spaced within its
    /// step, the steps back to back. `None` past the last step.
    pub fn time_of(&self, n: u64) -> Option<f64> {
        let n = n as f64;
        // Requests due before the current step.
        let mut before = 0.0;
        for (i, &rate) in self.rates.iter().enumerate() {
            let in_step = rate * self.step_s;
            if rate > 0.0 && n < before + in_step {
                let t = i as f64 * self.step_s + (n - before) / rate;
                // Rounding must not push a request into the next step.
                return Some(t.min((i + 1) as f64 * self.step_s - 1e-9));
            }
            before += in_step;
        }
        None
    }
}

/// The target rate over a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Profile {
    /// Constant, or linear from one rate to another.
    Ramp(RateProfile),
    /// Steps.
    Steps(StepProfile),
}

impl Profile {
    /// When the `n`-th request (0-based) is due (s); `None` past the end.
    pub fn time_of(&self, n: u64) -> Option<f64> {
        match self {
            Self::Ramp(p) => p.time_of(n),
            Self::Steps(p) => p.time_of(n),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ramp(p) if p.from == p.to => write!(f, "{:.0} ops/s", p.from),
            Self::Ramp(p) => write!(f, "{:.0} → {:.0} ops/s", p.from, p.to),
            Self::Steps(p) => {
                let rates: Vec<String> = p.rates.iter().map(|r| format!("{r:.0}")).collect();
                write!(f, "steps of {} s at {} ops/s", p.step_s, rates.join(", "))
            }
        }
    }
}

/// A key operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read.
    Get,
    /// Write a value.
    Put,
    /// Write a tombstone.
    Delete,
}

impl Mix {
    /// The operation for a uniform draw `u` in `[0, 1)`.
    pub fn pick(&self, u: f64) -> Op {
        if u < self.get {
            Op::Get
        } else if u < self.get + self.put {
            Op::Put
        } else if self.delete > 0.0 {
            Op::Delete
        } else {
            // Rounding left a sliver above get + put: give it to writes.
            Op::Put
        }
    }
}

/// Zipfian ranks over `0..n`: rank k (0-based) drawn with weight
/// 1/(k+1)^theta. The constant-time method of Gray et al., "Quickly
/// generating billion-record synthetic databases" (1994), as YCSB uses it;
/// the setup sums n terms once.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipf {
    /// A sampler over `0..n` (n ≥ 1) with skew `theta` in (0, 1).
    pub fn new(n: u64, theta: f64) -> Self {
        let n = n.max(1);
        let zeta_n: f64 = (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum();
        let zeta_2 = 1.0 + 0.5f64.powf(theta);
        let eta = if n > 1 {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        } else {
            0.0
        };
        Self {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
        }
    }

    /// The rank for a uniform draw `u` in `[0, 1)`.
    pub fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
}

/// Chooses key indexes.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    /// Every key of `0..n` equally likely.
    Uniform(u64),
    /// Low indexes are hot.
    Zipfian(Zipf),
}

impl KeyChooser {
    /// For a workload's key space and distribution.
    pub fn new(keys: u64, distribution: KeyDistribution, theta: f64) -> Self {
        match distribution {
            KeyDistribution::Uniform => Self::Uniform(keys.max(1)),
            KeyDistribution::Zipfian => Self::Zipfian(Zipf::new(keys, theta)),
        }
    }

    /// One key index.
    pub fn pick(&self, rng: &mut impl Rng) -> u64 {
        match self {
            Self::Uniform(n) => rng.random_range(0..*n),
            Self::Zipfian(z) => z.rank(rng.random::<f64>()),
        }
    }
}

/// The key for index `i`; the preload writes the same names.
pub fn key_name(i: u64) -> String {
    format!("bench-{i:010}")
}

/// One request of the offered load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// Position in the schedule (0-based).
    pub seq: u64,
    /// When it is due, from the start of the run.
    pub at: Duration,
    /// What to do.
    pub op: Op,
    /// Which key index.
    pub key: u64,
    /// Value size for a put (0 otherwise).
    pub value_bytes: u32,
}

/// The offered load of a run, request by request, in due order.
pub struct Schedule {
    profile: Profile,
    mix: Mix,
    keys: KeyChooser,
    sizes: ValueSize,
    rng: StdRng,
    next: u64,
}

impl Schedule {
    /// The schedule of a workload.
    pub fn new(workload: &Workload, profile: Profile) -> Self {
        Self {
            profile,
            mix: workload.mix,
            keys: KeyChooser::new(workload.keys, workload.distribution, workload.theta),
            sizes: workload.value_bytes,
            rng: StdRng::seed_from_u64(workload.seed),
            next: 0,
        }
    }

    /// The workload's requests without an end and without meaningful due
    /// times (one per second): the same mix, keys and sizes for a closed
    /// loop, which sends each request when the previous one answered.
    pub fn endless(workload: &Workload) -> Self {
        let profile = Profile::Ramp(RateProfile {
            from: 1.0,
            to: 1.0,
            duration_s: f64::INFINITY,
        });
        Self::new(workload, profile)
    }
}

impl Iterator for Schedule {
    type Item = Planned;

    fn next(&mut self) -> Option<Planned> {
        let t = self.profile.time_of(self.next)?;
        let op = self.mix.pick(self.rng.random::<f64>());
        let key = self.keys.pick(&mut self.rng);
        let value_bytes = match op {
            Op::Put => self.sizes.sample(&mut self.rng),
            Op::Get | Op::Delete => 0,
        };
        let planned = Planned {
            seq: self.next,
            at: Duration::from_secs_f64(t),
            op,
            key,
            value_bytes,
        };
        self.next += 1;
        Some(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn workload(extra: &str) -> Workload {
        let text = format!(
            "[cluster]\nnodes = 1\n[workload]\nduration_s = 10\nkeys = 1000\nseed = 7\n{extra}\n"
        );
        Scenario::parse(&text).unwrap().workload
    }

    fn per_second(times: &[Duration], seconds: usize) -> Vec<usize> {
        let mut counts = vec![0; seconds];
        for t in times {
            counts[t.as_secs() as usize] += 1;
        }
        counts
    }

    #[test]
    fn constant_rate_is_evenly_spaced_and_ends_with_the_run() {
        let p = RateProfile {
            from: 100.0,
            to: 100.0,
            duration_s: 10.0,
        };
        let times: Vec<f64> = (0..).map_while(|n| p.time_of(n)).collect();
        assert_eq!(times.len(), 1000);
        for pair in times.windows(2) {
            assert!((pair[1] - pair[0] - 0.01).abs() < 1e-9);
        }
    }

    #[test]
    fn ramp_offers_the_integral_and_rises_linearly() {
        let w = workload("ramp = [100, 300]");
        let p = RateProfile {
            from: 100.0,
            to: 300.0,
            duration_s: 10.0,
        };
        let times: Vec<Duration> = Schedule::new(&w, Profile::Ramp(p)).map(|r| r.at).collect();
        // (100 + 300) / 2 · 10 s.
        assert!((times.len() as i64 - 2000).abs() <= 1, "{}", times.len());
        let counts = per_second(&times, 10);
        for (s, &c) in counts.iter().enumerate() {
            let expected = p.rate_at(s as f64 + 0.5);
            assert!(
                (c as f64 - expected).abs() <= 2.0,
                "second {s}: {c} vs {expected}"
            );
        }
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "due order");
    }

    #[test]
    fn ramp_down_to_zero_ends_cleanly() {
        let p = RateProfile {
            from: 100.0,
            to: 0.0,
            duration_s: 10.0,
        };
        let n = (0..).map_while(|n| p.time_of(n)).count();
        assert!((n as i64 - 500).abs() <= 1, "{n}");
    }

    #[test]
    fn due_times_do_not_depend_on_anything_but_the_schedule() {
        // Open loop: the offsets are fixed in advance, so a slow answer can
        // never push a later request back.
        let w = workload("rate = 50");
        let p = RateProfile {
            from: 50.0,
            to: 50.0,
            duration_s: 10.0,
        };
        let a: Vec<Planned> = Schedule::new(&w, Profile::Ramp(p)).collect();
        let b: Vec<Planned> = Schedule::new(&w, Profile::Ramp(p)).collect();
        assert_eq!(a, b);
        assert_eq!(a[10].at, Duration::from_millis(200));
    }

    #[test]
    fn mix_is_respected() {
        let w = workload("rate = 1000\nmix = { get = 0.5, put = 0.3, delete = 0.2 }");
        let p = RateProfile {
            from: 1000.0,
            to: 1000.0,
            duration_s: 10.0,
        };
        let ops: Vec<Op> = Schedule::new(&w, Profile::Ramp(p)).map(|r| r.op).collect();
        let share = |op| ops.iter().filter(|o| **o == op).count() as f64 / ops.len() as f64;
        assert!((share(Op::Get) - 0.5).abs() < 0.03);
        assert!((share(Op::Put) - 0.3).abs() < 0.03);
        assert!((share(Op::Delete) - 0.2).abs() < 0.03);
    }

    #[test]
    fn zipfian_is_skewed_and_uniform_is_not() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 1000;
        let draws = 100_000;
        let hot_share = |chooser: &KeyChooser, rng: &mut StdRng| {
            let mut counts = vec![0u64; n as usize];
            for _ in 0..draws {
                counts[chooser.pick(rng) as usize] += 1;
            }
            // Share of the 10 most-drawn keys (1% of the space).
            counts.sort_unstable_by(|a, b| b.cmp(a));
            counts[..10].iter().sum::<u64>() as f64 / draws as f64
        };
        let zipf = KeyChooser::new(n, KeyDistribution::Zipfian, 0.99);
        let uniform = KeyChooser::new(n, KeyDistribution::Uniform, 0.99);
        let z = hot_share(&zipf, &mut rng);
        let u = hot_share(&uniform, &mut rng);
        // With theta 0.99 over 1000 keys the top 1% draw about 38%.
        assert!(z > 0.3, "zipf top-1% share {z}");
        assert!(u < 0.03, "uniform top-1% share {u}");
    }

    #[test]
    fn zipf_rank_zero_has_its_analytic_weight() {
        let z = Zipf::new(100, 0.5);
        let mut rng = StdRng::seed_from_u64(9);
        let draws = 200_000;
        let zeros = (0..draws)
            .filter(|_| z.rank(rng.random::<f64>()) == 0)
            .count();
        let expected = 1.0 / z.zeta_n;
        let got = zeros as f64 / draws as f64;
        assert!((got - expected).abs() < 0.01, "{got} vs {expected}");
        assert!((0..1000).all(|i| z.rank(i as f64 / 1000.0) < 100));
    }

    #[test]
    fn steps_hold_each_rate_for_its_step() {
        let p = StepProfile {
            rates: vec![50.0, 100.0, 0.0, 200.0],
            step_s: 2.0,
        };
        let times: Vec<Duration> = (0..)
            .map_while(|n| p.time_of(n))
            .map(Duration::from_secs_f64)
            .collect();
        assert_eq!(per_second(&times, 8), [50, 50, 100, 100, 0, 0, 200, 200]);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "due order");
        // Evenly spaced inside a step: 1/100 s apart in the second one.
        let second = p.time_of(101).unwrap() - p.time_of(100).unwrap();
        assert!((second - 0.01).abs() < 1e-9, "{second}");
        assert_eq!(p.time_of(100), Some(2.0));
    }

    #[test]
    fn a_step_schedule_is_reproducible_and_described() {
        let w = workload("steps = [0.5, 2]\nstep_s = 5\npeak = 100");
        assert_eq!(w.duration_s, 10, "duration filled in from the steps");
        let profile = Profile::Steps(StepProfile {
            rates: vec![50.0, 200.0],
            step_s: 5.0,
        });
        let a: Vec<Planned> = Schedule::new(&w, profile.clone()).collect();
        let b: Vec<Planned> = Schedule::new(&w, profile.clone()).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 250 + 1000);
        assert_eq!(profile.to_string(), "steps of 5 s at 50, 200 ops/s");
    }

    #[test]
    fn an_endless_schedule_does_not_end() {
        let w = workload("rate = 10");
        assert_eq!(
            Schedule::endless(&w).nth(1_000_000).map(|r| r.seq),
            Some(1_000_000)
        );
    }

    #[test]
    fn value_sizes_stay_in_range() {
        let w = workload("rate = 100\nmix = { put = 1.0 }\nvalue_bytes = { min = 10, max = 20 }");
        let p = RateProfile {
            from: 100.0,
            to: 100.0,
            duration_s: 10.0,
        };
        assert!(
            Schedule::new(&w, Profile::Ramp(p))
                .all(|r| (10..=20).contains(&r.value_bytes) && r.op == Op::Put)
        );
    }
}
