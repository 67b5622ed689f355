//! `comparison.png`: the variants of a run over time, one colour per
//! variant, in stacked panels — goodput (the offered load as a pale
//! band), p99 of successful requests (log scale), failed and dropped
//! requests per second, the attempts the clients sent per second
//! (requests plus retries) and, when a variant lost redundancy, the
//! recovery (bytes/s solid, under-replicated partitions dashed). Step
//! boundaries, or the first variant's events, are vertical lines across
//! all of them.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::cluster::Event;
use super::compare::{Comparison, VariantResult};
use super::plot::{
    DrawResult, Marker, event_markers, label_rows, label_y, latency_range, legend, line,
    linear_chart, log_chart, mark, runs,
};
use super::plot_recovery::{self, Series};
use super::recovery;
use super::timeline::SecondRow;

/// Image width, and height per panel (as timeline.png's).
const WIDTH: u32 = 1600;
const PANEL_HEIGHT: u32 = 400;

/// Variant colours, in order (told apart in colour and in grey).
const COLOURS: [RGBColor; 6] = [
    RGBColor(30, 90, 200),
    RGBColor(230, 130, 0),
    RGBColor(40, 160, 80),
    RGBColor(150, 50, 170),
    RGBColor(200, 30, 30),
    RGBColor(0, 150, 170),
];

/// Step boundaries and fault lines.
const MARKER: RGBColor = RGBColor(110, 110, 110);

/// What a panel plots from each row of a variant.
type Value = fn(&SecondRow) -> Option<f64>;

/// Draws the comparison into `path`.
pub fn draw(path: &Path, title: &str, c: &Comparison) -> anyhow::Result<()> {
    draw_inner(path, title, c).map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

fn draw_inner(path: &Path, title: &str, c: &Comparison) -> DrawResult {
    let recovery = c
        .variants
        .iter()
        .any(|v| plot_recovery::has_recovery(&v.timeline));
    let count = if recovery { 5 } else { 4 };
    let root = BitMapBackend::new(path, (WIDTH, PANEL_HEIGHT * count)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (super::plot::FONT, 30))?;
    let panels = root.split_evenly((count as usize, 1));
    let end = c
        .variants
        .iter()
        .map(|v| v.timeline.len())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let markers = markers(c);
    goodput(&panels[0], c, &markers, end)?;
    p99(&panels[1], c, &markers, end)?;
    let failed: Value = |r| Some((r.errors.values().sum::<u64>() + r.dropped) as f64);
    counts(
        &panels[2],
        c,
        &markers,
        end,
        "Failed and dropped requests per second (refused included, by second due)",
        failed,
    )?;
    counts(
        &panels[3],
        c,
        &markers,
        end,
        "Attempts the clients sent per second (requests + retries)",
        |r| Some(r.client.attempts as f64),
    )?;
    if recovery {
        let series: Vec<Series<'_>> = (0..)
            .zip(&c.variants)
            .flat_map(|(i, v)| {
                [
                    (format!("{} MiB/s", v.name), plot_recovery::MIB_PER_S, false),
                    (
                        format!("{} under-replicated", v.name),
                        plot_recovery::UNDER_REPLICATED,
                        true,
                    ),
                ]
                .map(|(name, value, right)| Series {
                    name,
                    colour: colour(i),
                    rows: &v.timeline,
                    value,
                    right,
                    dashed: right,
                })
            })
            .collect();
        plot_recovery::draw(&panels[4], &series, &markers, end)?;
    }
    root.present()?;
    Ok(())
}

/// Step starts for a step load, else the first variant's faults (every
/// variant has the same fault schedule) and each variant's own recovery
/// events (down, out, redundant) in its colour.
fn markers(c: &Comparison) -> Vec<Marker> {
    let w = &c.scenario.workload;
    match w.step_s {
        Some(step_s) if !w.steps.is_empty() => (0u64..)
            .zip(&w.steps)
            .map(|(i, m)| Marker {
                t_s: (i * step_s) as f64,
                label: format!("{m}× peak"),
                colour: MARKER,
            })
            .collect(),
        _ => {
            let own =
                |e: &&Event| [recovery::DOWN, recovery::OUT, recovery::REDUNDANT].contains(&e.kind);
            let shared: Vec<Event> = c
                .variants
                .first()
                .map(|v| v.events.iter().filter(|e| !own(e)).cloned().collect())
                .unwrap_or_default();
            let mut out = event_markers(&shared);
            let per_variant: Vec<(&str, Vec<Marker>)> = c
                .variants
                .iter()
                .map(|v| {
                    let events: Vec<Event> = v.events.iter().filter(own).cloned().collect();
                    (v.name.as_str(), event_markers(&events))
                })
                .collect();
            out.extend(merge_own(per_variant));
            out.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
            out
        }
    }
}

/// The variants' own markers, one per label (which holds the time, to a
/// tenth of a second): a marker every variant has is drawn once, grey and
/// unprefixed; one that only some have names them and takes the first
/// one's colour.
fn merge_own(per_variant: Vec<(&str, Vec<Marker>)>) -> Vec<Marker> {
    let count = per_variant.len();
    let mut merged: Vec<(Marker, Vec<(usize, &str)>)> = Vec::new();
    for (i, (name, markers)) in per_variant.into_iter().enumerate() {
        for m in markers {
            match merged.iter_mut().find(|(o, _)| o.label == m.label) {
                Some((_, owners)) => owners.push((i, name)),
                None => merged.push((m, vec![(i, name)])),
            }
        }
    }
    merged
        .into_iter()
        .map(|(m, owners)| {
            if owners.len() == count && count > 1 {
                return Marker {
                    colour: MARKER,
                    ..m
                };
            }
            let names: Vec<&str> = owners.iter().map(|(_, n)| *n).collect();
            Marker {
                label: format!("{}: {}", names.join(", "), m.label),
                colour: colour(owners[0].0),
                ..m
            }
        })
        .collect()
}

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

fn highest(c: &Comparison, value: Value) -> f64 {
    c.variants
        .iter()
        .flat_map(|v| v.timeline.iter().filter_map(value))
        .fold(0.0, f64::max)
}

fn goodput(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    c: &Comparison,
    markers: &[Marker],
    end: f64,
) -> DrawResult {
    let peak = highest(c, |r| Some(r.offered.max(r.ok) as f64)).max(1.0);
    // Head room above the peak for the marker labels.
    let top = peak * 1.45;
    let mut chart = linear_chart(area, "Goodput (ok/s) per variant", "seconds", end, top)?;
    if let Some(first) = c.variants.first() {
        line(
            &mut chart,
            "offered",
            RGBColor(200, 200, 200).stroke_width(8),
            runs(&first.timeline, |r| Some(r.offered as f64)),
        )?;
    }
    per_variant(&mut chart, &c.variants, |r| Some(r.goodput))?;
    let rows = label_rows(markers, end);
    let y = |i: usize| label_y(top, rows[i]);
    mark(&mut chart, markers, (0.0, top), Some(&y))?;
    legend(&mut chart, SeriesLabelPosition::LowerLeft)
}

fn p99(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    c: &Comparison,
    markers: &[Marker],
    end: f64,
) -> DrawResult {
    let range = latency_range(
        c.variants
            .iter()
            .flat_map(|v| v.timeline.iter().filter_map(|r| r.p99_ms)),
    );
    let mut chart = log_chart(
        area,
        "p99 of successful requests, from when each was due (ms, log scale)",
        end,
        range,
    )?;
    per_variant(&mut chart, &c.variants, |r| r.p99_ms)?;
    mark(&mut chart, markers, range, None)?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn counts(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    c: &Comparison,
    markers: &[Marker],
    end: f64,
    caption: &str,
    value: Value,
) -> DrawResult {
    // At least 0..6, so whole-number labels stay distinct.
    let top = highest(c, value).max(5.0) * 1.2;
    let mut chart = linear_chart(
        area,
        caption,
        "seconds since the start of the run",
        end,
        top,
    )?;
    per_variant(&mut chart, &c.variants, value)?;
    mark(&mut chart, markers, (0.0, top), None)?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// One line per variant, in its colour.
fn per_variant<Y>(
    chart: &mut super::plot::Chart<'_, '_, Y>,
    variants: &[VariantResult],
    value: Value,
) -> DrawResult
where
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for (i, v) in variants.iter().enumerate() {
        line(
            chart,
            &v.name,
            colour(i).stroke_width(3),
            runs(&v.timeline, value),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(t_s: f64, label: &str) -> Marker {
        Marker {
            t_s,
            label: label.to_owned(),
            colour: RGBColor(0, 0, 0),
        }
    }

    #[test]
    fn events_every_variant_shares_are_drawn_once() {
        let merged = merge_own(vec![
            (
                "a",
                vec![
                    marker(29.0, "n2 down (29.0 s)"),
                    marker(72.0, "redundant (72.0 s)"),
                ],
            ),
            (
                "b",
                vec![
                    marker(29.0, "n2 down (29.0 s)"),
                    marker(42.0, "redundant (42.0 s)"),
                ],
            ),
        ]);
        let got: Vec<_> = merged
            .iter()
            .map(|m| (m.label.as_str(), m.colour))
            .collect();
        assert_eq!(
            got,
            [
                ("n2 down (29.0 s)", MARKER),
                ("a: redundant (72.0 s)", colour(0)),
                ("b: redundant (42.0 s)", colour(1)),
            ]
        );
        // A single variant's markers keep its name.
        let one = merge_own(vec![("only", vec![marker(1.0, "n1 out (1.0 s)")])]);
        assert_eq!(one[0].label, "only: n1 out (1.0 s)");
    }
}
