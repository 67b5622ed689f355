//! `resources.png`: the leak soak's series over the run, one panel each
//! (RSS, open fds, tokio tasks, connections, hint bytes), a line per node
//! (broken where the node did not answer), the faults and recoveries as
//! vertical lines like `timeline.png`'s, and the two windows the
//! flatness figures compare shaded.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::cluster::Event;
use super::plot::{
    DrawResult, FONT, Marker, Second, event_colour, label_rows, label_y, legend, line,
    linear_chart, mark, runs,
};
use super::report::Machine;
use super::resources::{Resources, Series};

/// Image width and height per panel.
const WIDTH: u32 = 1600;
const PANEL_HEIGHT: u32 = 330;

/// One colour per node, none of them the events' red, orange, purple or
/// green, so a node's line is never taken for a fault's.
const NODE_COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(0, 0, 0),
    RGBColor(86, 180, 233),
    RGBColor(204, 121, 167),
    RGBColor(140, 90, 40),
    RGBColor(0, 150, 170),
    RGBColor(120, 120, 120),
];

/// The image's title: the run (`name`, or `name / variant`) and where it
/// ran.
pub fn title(run: &str, machine: &Machine) -> String {
    format!(
        "levee bench: {run}, resources per node ({})",
        machine.line()
    )
}

/// Draws the soak's series into `path`.
pub fn draw(path: &Path, title: &str, r: &Resources, events: &[Event]) -> anyhow::Result<()> {
    draw_inner(path, title, r, events)
        .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

/// A second's value, as the panels draw it.
struct Point {
    t: u64,
    v: Option<f64>,
}

impl Second for Point {
    fn second(&self) -> u64 {
        self.t
    }
}

/// The unit a panel draws a series in, and the divisor to get there.
fn unit(series: Series) -> (&'static str, f64) {
    match series {
        Series::RssBytes => ("resident memory (MiB)", f64::from(1u32 << 20)),
        Series::HeapBytes => ("heap in use (MiB)", f64::from(1u32 << 20)),
        Series::OpenFds => ("open file descriptors", 1.0),
        Series::AliveTasks => ("tokio tasks alive", 1.0),
        Series::OpenConnections => ("protocol connections open", 1.0),
        Series::HintBytes => ("hints held (KiB)", 1024.0),
    }
}

fn draw_inner(path: &Path, title: &str, r: &Resources, events: &[Event]) -> DrawResult {
    let count = Series::ALL.len() as u32;
    let root = BitMapBackend::new(path, (WIDTH, PANEL_HEIGHT * count)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 30))?;
    let panels = root.split_evenly((Series::ALL.len(), 1));
    let seconds = r.nodes.iter().map(|n| n.values(Series::RssBytes).len());
    let end = seconds.max().unwrap_or(0).max(1) as f64;
    let markers = markers(events);
    let last = Series::ALL.len() - 1;
    for (i, (series, area)) in Series::ALL.iter().zip(panels.iter()).enumerate() {
        panel(area, r, *series, &markers, (end, i == 0, i == last))?;
    }
    root.present()?;
    Ok(())
}

/// The run's events as vertical lines: the faults labelled (the action
/// and the node; the axis gives the time, and on a half-hour run a label
/// that also carried it would cover minutes), the cluster's answers to
/// them (down, serving again, redundant) drawn in their colours only.
fn markers(events: &[Event]) -> (Vec<Marker>, Vec<Marker>) {
    let marker = |e: &Event| Marker {
        t_s: e.t_s,
        label: e.label_for(&format!("n{}", e.node)),
        colour: event_colour(e),
    };
    let faults = events.iter().filter(|e| e.action.is_some());
    let answers = events.iter().filter(|e| e.action.is_none());
    (faults.map(marker).collect(), answers.map(marker).collect())
}

/// One series: a line per node; the fault labels in the first panel, what
/// the lines' colours mean under the last.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    r: &Resources,
    series: Series,
    (faults, answers): &(Vec<Marker>, Vec<Marker>),
    (end, first, last): (f64, bool, bool),
) -> DrawResult {
    let (caption, divisor) = unit(series);
    let lines: Vec<(u8, Vec<Point>)> = r
        .nodes
        .iter()
        .map(|n| {
            let points = (0u64..)
                .zip(n.values(series))
                .map(|(t, v)| Point {
                    t,
                    v: v.map(|v| v / divisor),
                })
                .collect();
            (n.node, points)
        })
        .collect();
    let peak = lines
        .iter()
        .flat_map(|(_, p)| p.iter().filter_map(|p| p.v))
        .fold(0.0, f64::max)
        // At least 0..6, so whole-number labels stay distinct.
        .max(5.0);
    // Head room for the event labels (first panel) or the legend (the
    // others): the lines stay below both.
    let top = peak * if first { 1.6 } else { 1.8 };
    let caption = if first {
        format!("{caption}; shaded: the windows compared (after warm-up, at the end)")
    } else {
        caption.to_owned()
    };
    let x_desc = if last {
        "seconds since the start of the run. Lines: a fault (red), a node marked down (orange), serving or redundant again (green)"
    } else {
        "seconds since the start of the run"
    };
    let mut chart = linear_chart(area, &caption, x_desc, end, top)?;
    // The windows the figures compare (for a node that ran throughout).
    let c = r.config;
    let shade = RGBColor(120, 120, 120).mix(0.12).filled();
    for from in [c.warmup_s, (end as u64).saturating_sub(c.window_s)] {
        let to = from + c.window_s;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(from as f64, 0.0), (to as f64, top)],
            shade,
        )))?;
    }
    for (i, (node, points)) in lines.into_iter().enumerate() {
        let colour = NODE_COLOURS[i % NODE_COLOURS.len()];
        // One pixel: a second per pixel or so, and a wider stroke's
        // mitred joins draw a one-second spike far past its value.
        line(
            &mut chart,
            &format!("node {node}"),
            colour.stroke_width(1),
            runs(&points, |p| p.v),
        )?;
    }
    mark(&mut chart, answers, (0.0, top), None)?;
    if first {
        let rows = label_rows(faults, end);
        let y = |i: usize| label_y(top, rows[i]);
        return mark(&mut chart, faults, (0.0, top), Some(&y));
    }
    mark(&mut chart, faults, (0.0, top), None)?;
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}
