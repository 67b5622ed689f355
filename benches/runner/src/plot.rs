//! `timeline.png`: stacked panels over the run — throughput (offered and
//! goodput), latency percentiles of successful requests (log scale),
//! failures per second by kind and, for a run that lost redundancy, the
//! recovery (`plot_recovery.rs`) — with every event drawn as a vertical
//! line across all of them and labelled in the top one.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::cluster::Event;
use super::plot_recovery;
use super::recovery;
use super::timeline::SecondRow;

/// What drawing returns (plotters' errors are of many types).
pub(super) type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// What a line plots from each row.
type Value = fn(&SecondRow) -> Option<f64>;

/// Image width, and height per panel: readable on a laptop screen and in
/// a markdown page.
const WIDTH: u32 = 1600;
const PANEL_HEIGHT: u32 = 400;

/// The font of every label.
pub(super) const FONT: &str = "sans-serif";

/// Width of the y-axis labels. Only the recovery panel has a second axis
/// on the right; the others leave the same width blank there, so that
/// seconds line up from panel to panel.
pub(super) const LABELS: u32 = 80;

/// Colour of a fault line (red), of a node marked down (orange) or out
/// (purple), and of a "serving again" or "redundant again" line (green).
pub(super) fn event_colour(e: &Event) -> RGBColor {
    match e.kind {
        "serving" | recovery::REDUNDANT => RGBColor(0, 140, 60),
        recovery::DOWN => RGBColor(230, 130, 0),
        recovery::OUT => RGBColor(150, 50, 170),
        _ => RGBColor(200, 30, 30),
    }
}

/// Draws the timeline of a run into `path`.
pub fn draw(path: &Path, title: &str, rows: &[SecondRow], events: &[Event]) -> anyhow::Result<()> {
    draw_inner(path, title, rows, events)
        .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

fn draw_inner(path: &Path, title: &str, rows: &[SecondRow], events: &[Event]) -> DrawResult {
    let recovery = plot_recovery::has_recovery(rows);
    let count = if recovery { 4 } else { 3 };
    let root = BitMapBackend::new(path, (WIDTH, PANEL_HEIGHT * count)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 30))?;
    let panels = root.split_evenly((count as usize, 1));
    let end = rows.len().max(1) as f64;
    throughput(&panels[0], rows, events, end)?;
    latency(&panels[1], rows, events, end)?;
    failures(&panels[2], rows, events, end)?;
    if recovery {
        let series = plot_recovery::run_series(rows);
        plot_recovery::draw(&panels[3], &series, &event_markers(events), end)?;
    }
    root.present()?;
    Ok(())
}

/// A row of one second, as the panels draw it (a run's rows, and the
/// simulator's, `sim/plot.rs`).
pub(super) trait Second {
    /// The second, from 0.
    fn second(&self) -> u64;
}

impl Second for SecondRow {
    fn second(&self) -> u64 {
        self.t
    }
}

/// The x of a row: the middle of its second.
fn x(row: &impl Second) -> f64 {
    row.second() as f64 + 0.5
}

/// Runs of consecutive seconds that have a value, so a line breaks where
/// there is nothing to plot instead of bridging the gap.
pub(super) fn runs<R: Second>(
    rows: &[R],
    value: impl Fn(&R) -> Option<f64>,
) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for row in rows {
        match value(row) {
            Some(v) => out.last_mut().into_iter().for_each(|r| r.push((x(row), v))),
            None if out.last().is_some_and(|r| !r.is_empty()) => out.push(Vec::new()),
            None => {}
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// A chart with seconds across.
pub(super) type Chart<'a, 'b, Y> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

/// One named line, possibly in several pieces.
pub(super) fn line<Y>(
    chart: &mut Chart<'_, '_, Y>,
    name: &str,
    style: ShapeStyle,
    pieces: Vec<Vec<(f64, f64)>>,
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    for (i, piece) in pieces.into_iter().enumerate() {
        let series = chart.draw_series(LineSeries::new(piece, style))?;
        if i == 0 {
            series
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
    }
    Ok(())
}

/// A vertical line across a panel: an event, or a step boundary.
pub(super) struct Marker {
    /// Where (s).
    pub t_s: f64,
    /// Its label in the top panel.
    pub label: String,
    /// Its colour.
    pub colour: RGBColor,
}

/// The markers of a run's events, labelled with their time.
pub(super) fn event_markers(events: &[Event]) -> Vec<Marker> {
    // Events at the same moment (three nodes stopped at once) get one
    // line and one label: stacked labels would cover each other.
    let mut groups: Vec<(&Event, Vec<u8>)> = Vec::new();
    for e in events {
        match groups.last_mut() {
            Some((first, nodes)) if first.same_moment(e) => nodes.push(e.node),
            _ => groups.push((e, vec![e.node])),
        }
    }
    groups
        .into_iter()
        .map(|(e, nodes)| {
            let nodes: Vec<String> = nodes.iter().map(|n| format!("n{n}")).collect();
            Marker {
                t_s: e.t_s,
                label: format!("{} ({:.1} s)", e.label_for(&nodes.join(",")), e.t_s),
                colour: event_colour(e),
            }
        })
        .collect()
}

/// Rows of marker labels in the top panel's head room.
const LABEL_ROWS: usize = 4;

/// The row (0 = top) of each marker's label, the markers in time order:
/// the first row free at the marker's time, so that labels close together
/// stack instead of covering each other; when every row is taken, the
/// one that frees up first. A label is taken to be about 10 px a
/// character (18 px font) on a plot about 1450 px wide.
pub(super) fn label_rows(markers: &[Marker], end_s: f64) -> Vec<usize> {
    let char_s = end_s * 10.0 / 1450.0;
    let mut free_from = [f64::MIN; LABEL_ROWS];
    markers
        .iter()
        .map(|m| {
            let row = free_from
                .iter()
                .position(|f| *f <= m.t_s)
                .unwrap_or_else(|| {
                    (0..LABEL_ROWS)
                        .min_by(|a, b| free_from[*a].total_cmp(&free_from[*b]))
                        .unwrap_or(0)
                });
            free_from[row] = m.t_s + (m.label.chars().count() + 1) as f64 * char_s;
            row
        })
        .collect()
}

/// The height of label row `row` in a panel `top` high.
pub(super) fn label_y(top: f64, row: usize) -> f64 {
    top * (0.97 - 0.07 * row as f64)
}

/// Vertical lines at the markers, from `low` to `high`; labels too when
/// `labels` (staggered over three rows so close markers stay readable).
pub(super) fn mark<Y>(
    chart: &mut Chart<'_, '_, Y>,
    markers: &[Marker],
    (low, high): (f64, f64),
    labels: Option<&dyn Fn(usize) -> f64>,
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    for (i, m) in markers.iter().enumerate() {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(m.t_s, low), (m.t_s, high)],
            m.colour.stroke_width(2),
        )))?;
        if let Some(y) = labels {
            let font = (FONT, 18).into_font().color(&m.colour);
            chart.draw_series(std::iter::once(Text::new(
                format!(" {}", m.label),
                (m.t_s, y(i)),
                font,
            )))?;
        }
    }
    Ok(())
}

/// The legend box.
pub(super) fn legend<'a, 'b: 'a, Y>(
    chart: &mut Chart<'a, 'b, Y>,
    position: SeriesLabelPosition,
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

/// A panel with linear axes from 0: seconds across, counts up, its mesh
/// drawn.
pub(super) fn linear_chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    caption: &str,
    x_desc: &str,
    end: f64,
    top: f64,
) -> Result<Chart<'a, 'b, plotters::coord::types::RangedCoordf64>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .margin_right(12 + LABELS)
        .y_label_area_size(LABELS)
        .build_cartesian_2d(0f64..end, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 16))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    Ok(chart)
}

fn throughput(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    rows: &[SecondRow],
    events: &[Event],
    end: f64,
) -> DrawResult {
    let peak = rows
        .iter()
        .map(|r| r.offered.max(r.ok) as f64)
        .fold(1.0, f64::max);
    // Head room above the peak for the event labels.
    let top = peak * 1.45;
    let mut chart = linear_chart(area, "Throughput (ops/s)", "seconds", end, top)?;
    // Wide and pale, under goodput: where the two agree, offered shows as
    // a halo instead of disappearing.
    line(
        &mut chart,
        "offered",
        RGBColor(190, 190, 190).stroke_width(8),
        runs(rows, |r| Some(r.offered as f64)),
    )?;
    line(
        &mut chart,
        "goodput (ok/s)",
        RGBColor(30, 90, 200).stroke_width(2),
        runs(rows, |r| Some(r.goodput)),
    )?;
    let markers = event_markers(events);
    let rows = label_rows(&markers, end);
    let y = |i: usize| label_y(top, rows[i]);
    mark(&mut chart, &markers, (0.0, top), Some(&y))?;
    // Below the lines: the head room above is for the event labels.
    legend(&mut chart, SeriesLabelPosition::LowerLeft)
}

/// 1, 2, 5, 10, 20, 50… within `low..=high`: log-scale labels a reader
/// can interpolate between (plotters' own put only one per decade).
pub(super) fn one_two_five(low: f64, high: f64) -> Vec<f64> {
    let mut out = Vec::new();
    // powi of each exponent, not repeated ×10, so 0.001 stays 0.001.
    let first = low.log10().floor() as i32;
    let last = high.log10().ceil() as i32;
    for exponent in first..=last {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(exponent);
            if (low..=high).contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// The y range of a log-scale latency panel: a little below the lowest
/// value and above the highest (0.1–10 ms when there are none).
pub(super) fn latency_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    if low <= high {
        ((low * 0.7).max(0.001), high * 1.5)
    } else {
        (0.1, 10.0)
    }
}

/// A latency panel: seconds across, milliseconds up on a log scale
/// labelled 1-2-5, its mesh drawn.
pub(super) type LogChart<'a, 'b> = Chart<
    'a,
    'b,
    plotters::coord::combinators::WithKeyPoints<plotters::coord::combinators::LogCoord<f64>>,
>;

/// A latency panel over `low..high` ms.
pub(super) fn log_chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    caption: &str,
    end: f64,
    (low, high): (f64, f64),
) -> Result<LogChart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .margin_right(12 + LABELS)
        .y_label_area_size(LABELS)
        .build_cartesian_2d(
            0f64..end,
            (low..high)
                .log_scale()
                .with_key_points(one_two_five(low, high)),
        )?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_label_formatter(&|v| format!("{v}"))
        .label_style((FONT, 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    Ok(chart)
}

fn latency(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    rows: &[SecondRow],
    events: &[Event],
    end: f64,
) -> DrawResult {
    let (low, high) = latency_range(
        rows.iter()
            .flat_map(|r| [r.p50_ms, r.p99_ms, r.p999_ms])
            .flatten(),
    );
    let mut chart = log_chart(
        area,
        "Latency of successful requests, from when each was due (ms, log scale)",
        end,
        (low, high),
    )?;
    let percentiles: [(&str, RGBColor, Value); 3] = [
        ("p50", RGBColor(40, 160, 80), |r| r.p50_ms),
        ("p99", RGBColor(230, 130, 0), |r| r.p99_ms),
        ("p99.9", RGBColor(200, 30, 30), |r| r.p999_ms),
    ];
    for (name, colour, value) in percentiles {
        line(&mut chart, name, colour.stroke_width(2), runs(rows, value))?;
    }
    mark(&mut chart, &event_markers(events), (low, high), None)?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn failures(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    rows: &[SecondRow],
    events: &[Event],
    end: f64,
) -> DrawResult {
    let kinds: [(&str, &str, RGBColor); 4] = [
        ("timeout", "timeout", RGBColor(200, 30, 30)),
        ("unavailable", "unavailable", RGBColor(120, 60, 170)),
        ("overloaded", "overloaded", RGBColor(230, 130, 0)),
        ("other", "other", RGBColor(90, 90, 90)),
    ];
    let peak = rows
        .iter()
        .flat_map(|r| r.errors.values().copied().chain([r.dropped]))
        .max()
        .unwrap_or(0)
        // At least 0..6, so whole-number labels stay distinct.
        .max(5) as f64;
    let top = peak * 1.2;
    let mut chart = linear_chart(
        area,
        "Failed and dropped requests per second (by second due)",
        "seconds since the start of the run",
        end,
        top,
    )?;
    for (key, name, colour) in kinds {
        line(
            &mut chart,
            name,
            colour.stroke_width(2),
            runs(rows, |r| r.errors.get(key).map(|&v| v as f64)),
        )?;
    }
    line(
        &mut chart,
        "dropped by generator",
        RGBColor(0, 150, 170).stroke_width(2),
        runs(rows, |r| Some(r.dropped as f64)),
    )?;
    mark(&mut chart, &event_markers(events), (0.0, top), None)?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_labels_stack_and_far_ones_share_the_top_row() {
        let m = |t_s: f64, label: &str| Marker {
            t_s,
            label: label.to_owned(),
            colour: RGBColor(0, 0, 0),
        };
        // 100 s across: a 20-character label covers about 14.5 s.
        let markers = [
            m(15.0, "kill n2,n5 (15.0 s)"),
            m(18.0, "down (18.0 s)"),
            m(21.0, "unguarded: out (21.0 s)"),
            m(22.0, "a"),
            m(23.0, "b"),
            m(60.0, "redundant (60.0 s)"),
        ];
        assert_eq!(label_rows(&markers, 100.0), [0, 1, 2, 3, 3, 0]);
        assert!(label_y(100.0, 0) > label_y(100.0, 3));
    }

    #[test]
    fn log_labels_step_one_two_five() {
        assert_eq!(one_two_five(0.7, 30.0), vec![1.0, 2.0, 5.0, 10.0, 20.0]);
        assert_eq!(one_two_five(3.0, 4.0), Vec::<f64>::new());
    }
}
