//! Pure: is a node's series flat? The figure is the value at the end of
//! the run over the value after warm-up, each the median of a window of
//! `window_s` seconds:
//!
//! - *after warm-up*: `[from + warmup_s, from + warmup_s + window_s)`,
//!   where `from` is the start of the node's process: 0 for a node that
//!   ran through the whole run, the second after its last `restart` for
//!   one a fault restarted. A new process is a new life (its memory,
//!   descriptors and tasks start again from nothing), so it is compared
//!   with itself, never with the process before it.
//! - *final*: the last `window_s` seconds of the run.
//!
//! A window where the node answered fewer than half of its seconds (it
//! was down, or stopped) has no value, and a process too young for both
//! windows apart has no figure: either is said, not guessed. A series at
//! 0 after warm-up (hints, when no node was down) is flat only if it is 0
//! at the end too: ×1 then, unbounded otherwise.

use serde::Serialize;

use super::{NodeSamples, ResourcesConfig, Series};

/// One node's series, judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flatness {
    /// The node (1-based).
    pub node: u8,
    /// The series.
    pub series: Series,
    /// The start of the process measured (s into the run): 0, or the
    /// second after its last restart.
    pub process_from_s: u64,
    /// The seconds `[from, to)` of the value after warm-up.
    pub reference_window: [u64; 2],
    /// Its median.
    pub reference: Option<f64>,
    /// The seconds `[from, to)` of the value at the end.
    pub final_window: [u64; 2],
    /// Its median.
    pub final_value: Option<f64>,
    /// `final_value / reference` (1 when both are 0; unbounded, written
    /// `null`, when only the reference is 0).
    pub ratio: Option<f64>,
    /// Why there is no ratio, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_figure: Option<String>,
}

/// Every node's every series. `restarts`: (node, seconds into the run)
/// of each `restart` fault.
pub fn of(nodes: &[NodeSamples], restarts: &[(u8, f64)], config: ResourcesConfig) -> Vec<Flatness> {
    let mut out = Vec::new();
    for n in nodes {
        let from = process_from(n.node, restarts);
        for series in Series::ALL {
            out.push(judge(n.node, series, n.values(series), from, config));
        }
    }
    out
}

/// The start of the node's last process: the whole second after its last
/// restart (the second of the restart itself may hold the old process's
/// last sample), or 0.
pub fn process_from(node: u8, restarts: &[(u8, f64)]) -> u64 {
    restarts
        .iter()
        .filter(|(n, _)| *n == node)
        .map(|(_, t)| t.max(0.0).ceil() as u64)
        .max()
        .unwrap_or(0)
}

/// One series of one node, its process started at `from` (s).
pub fn judge(
    node: u8,
    series: Series,
    values: &[Option<f64>],
    from: u64,
    config: ResourcesConfig,
) -> Flatness {
    let len = values.len() as u64;
    // Saturating: `levee bench replot` reads the config and the restart
    // times back from a result.json, which may say anything.
    let reference_from = from.saturating_add(config.warmup_s);
    let reference_window = [
        reference_from,
        reference_from.saturating_add(config.window_s),
    ];
    let final_window = [len.saturating_sub(config.window_s), len];
    let mut f = Flatness {
        node,
        series,
        process_from_s: from,
        reference_window,
        reference: None,
        final_window,
        final_value: None,
        ratio: None,
        no_figure: None,
    };
    if reference_window[1] > final_window[0] {
        f.no_figure = Some(format!(
            "its process (from {from} s) is too young: warm-up {} s and two windows of {} s need {} s, the run left {} s",
            config.warmup_s,
            config.window_s,
            config
                .warmup_s
                .saturating_add(config.window_s.saturating_mul(2)),
            len.saturating_sub(from)
        ));
        return f;
    }
    let (reference, final_value) = (
        window_median(values, reference_window),
        window_median(values, final_window),
    );
    f.reference = reference.ok();
    f.final_value = final_value.ok();
    match (reference, final_value) {
        (Ok(r), Ok(last)) => f.ratio = Some(ratio(r, last)),
        (Err(answered), _) => f.no_figure = Some(sparse("after warm-up", answered, config)),
        (_, Err(answered)) => f.no_figure = Some(sparse("at the end", answered, config)),
    }
    f
}

fn sparse(window: &str, answered: usize, config: ResourcesConfig) -> String {
    format!(
        "answered {answered} of the {} s {window}; half are needed",
        config.window_s
    )
}

/// The median of the values in the seconds `[from, to)`, when the node
/// answered at least half of them; else how many it answered.
pub fn window_median(values: &[Option<f64>], [from, to]: [u64; 2]) -> Result<f64, usize> {
    let mut seen: Vec<f64> = (from..to)
        .filter_map(|s| values.get(usize::try_from(s).ok()?).copied().flatten())
        .collect();
    let needed = usize::try_from(to.saturating_sub(from).div_ceil(2)).unwrap_or(usize::MAX);
    if seen.is_empty() || seen.len() < needed {
        return Err(seen.len());
    }
    seen.sort_by(f64::total_cmp);
    let mid = seen.len() / 2;
    Ok(if seen.len() % 2 == 1 {
        seen[mid]
    } else {
        (seen[mid - 1] + seen[mid]) / 2.0
    })
}

/// The value at the end over the value after warm-up: 1 when both are 0
/// (nothing held, nothing held), unbounded when only the first is.
pub fn ratio(reference: f64, last: f64) -> f64 {
    if reference > 0.0 {
        last / reference
    } else if last <= 0.0 {
        1.0
    } else {
        f64::INFINITY
    }
}

/// The highest ratio of `series` over the nodes that have one (`None`
/// when none has): the figure a target bounds.
pub fn worst(figures: &[Flatness], series: Series) -> Option<f64> {
    figures
        .iter()
        .filter(|f| f.series == series)
        .filter_map(|f| f.ratio)
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOAK: ResourcesConfig = ResourcesConfig {
        warmup_s: 10,
        window_s: 4,
    };

    fn flat(len: usize, v: f64) -> Vec<Option<f64>> {
        vec![Some(v); len]
    }

    #[test]
    fn a_flat_series_is_about_1_and_a_leaking_one_is_missed() {
        let mut noisy = flat(30, 100.0);
        // Spikes in the windows do not move a median.
        noisy[11] = Some(400.0);
        noisy[28] = Some(1.0);
        let f = judge(1, Series::RssBytes, &noisy, 0, SOAK);
        assert_eq!(
            (f.reference, f.final_value, f.ratio),
            (Some(100.0), Some(100.0), Some(1.0))
        );
        assert_eq!((f.reference_window, f.final_window), ([10, 14], [26, 30]));

        // +1% a second: 20% more at the end than after warm-up.
        let leaking: Vec<_> = (0..30)
            .map(|s| Some(1000.0 * (1.0 + 0.01 * s as f64)))
            .collect();
        let f = judge(1, Series::AliveTasks, &leaking, 0, SOAK);
        let r = f.ratio.unwrap();
        assert!((r - 1.275 / 1.115).abs() < 1e-9, "{r}");
        assert!(r > 1.1, "a leak of 1% a second must miss ×1.1: ×{r}");
        let figures = [f, judge(2, Series::AliveTasks, &flat(30, 7.0), 0, SOAK)];
        assert_eq!(worst(&figures, Series::AliveTasks), Some(r));
        assert_eq!(worst(&figures, Series::OpenFds), None);
    }

    #[test]
    fn hints_at_zero_must_end_at_zero() {
        let mut hints = flat(30, 0.0);
        let f = judge(3, Series::HintBytes, &hints, 0, SOAK);
        assert_eq!(f.ratio, Some(1.0));
        hints[26..].fill(Some(4096.0));
        let f = judge(3, Series::HintBytes, &hints, 0, SOAK);
        assert_eq!(f.ratio, Some(f64::INFINITY));
        // A hint held during a fault in between is not the figure.
        let mut drained = flat(30, 0.0);
        drained[15..22].fill(Some(1e6));
        assert_eq!(
            judge(3, Series::HintBytes, &drained, 0, SOAK).ratio,
            Some(1.0)
        );
    }

    #[test]
    fn a_restarted_node_is_compared_within_its_new_process() {
        let restarts = [(2, 3.4), (3, 9.0), (2, 1.0)];
        assert_eq!(process_from(2, &restarts), 4);
        assert_eq!(process_from(1, &restarts), 0);
        // The old process held 500; the new one starts at 100 and stays.
        let mut rss = flat(40, 500.0);
        rss[4..].fill(Some(100.0));
        let f = judge(2, Series::RssBytes, &rss, 4, SOAK);
        assert_eq!(f.reference_window, [14, 18]);
        assert_eq!(f.ratio, Some(1.0));
        // Too young for both windows: said, not guessed.
        let f = judge(2, Series::RssBytes, &rss, 25, SOAK);
        assert_eq!(f.ratio, None);
        assert!(f.no_figure.unwrap().contains("too young"));
    }

    #[test]
    fn a_node_down_at_the_end_has_no_figure_and_gaps_are_not_zeros() {
        let mut fds = flat(30, 50.0);
        fds[25..].fill(None);
        let f = judge(4, Series::OpenFds, &fds, 0, SOAK);
        assert_eq!((f.final_value, f.ratio), (None, None));
        assert!(f.no_figure.unwrap().contains("at the end"), "{fds:?}");
        // Half the window answered is enough; the gaps are left out.
        let mut stopped = flat(30, 50.0);
        stopped[26] = None;
        stopped[27] = None;
        assert_eq!(
            judge(4, Series::OpenFds, &stopped, 0, SOAK).ratio,
            Some(1.0)
        );
        assert_eq!(
            window_median(&[Some(1.0), Some(3.0), None, Some(2.0)], [0, 4]),
            Ok(2.0)
        );
        assert_eq!(window_median(&[Some(1.0), Some(4.0)], [0, 2]), Ok(2.5));
        assert_eq!(window_median(&[Some(1.0), None, None], [0, 3]), Err(1));
    }

    #[test]
    fn every_node_and_series_gets_a_figure() {
        let mut a = NodeSamples::empty(1, 30);
        for v in a.series.values_mut() {
            v.fill(Some(5.0));
        }
        let figures = of(&[a, NodeSamples::empty(2, 30)], &[], SOAK);
        let per_node = Series::ALL.len();
        assert_eq!(figures.len(), 2 * per_node);
        assert!(figures[..per_node].iter().all(|f| f.ratio == Some(1.0)));
        assert!(figures[per_node..].iter().all(|f| f.ratio.is_none()));
    }
}
