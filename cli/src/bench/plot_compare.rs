//! `comparison.png`: the variants of a run over time, one colour per
//! variant, in four stacked panels — goodput (the offered load as a pale
//! band), p99 of successful requests (log scale), failed and dropped
//! requests per second, and the attempts the clients sent per second
//! (requests plus retries). Step boundaries, or the first variant's
//! faults, are vertical lines across all four.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::compare::{Comparison, VariantResult};
use super::plot::{
    DrawResult, Marker, event_markers, latency_range, legend, line, linear_chart, log_chart, mark,
    runs,
};
use super::timeline::SecondRow;

/// Four panels, each as tall as one of timeline.png's three.
const SIZE: (u32, u32) = (1600, 1600);

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
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (super::plot::FONT, 30))?;
    let panels = root.split_evenly((4, 1));
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
    root.present()?;
    Ok(())
}

/// Step starts for a step load, else the first variant's events (every
/// variant has the same fault schedule).
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
        _ => c
            .variants
            .first()
            .map(|v| event_markers(&v.events))
            .unwrap_or_default(),
    }
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
    let label_y = |i: usize| top * (0.97 - 0.08 * (i % 3) as f64);
    mark(&mut chart, markers, (0.0, top), Some(&label_y))?;
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
