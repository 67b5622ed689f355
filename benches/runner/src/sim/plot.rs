//! `sim.png`: three panels over simulated time — under-replicated
//! partitions by live replicas left, with the moves in flight; the
//! cluster's recovery bytes per second against its configured bound; and
//! the busiest node's send and receive rates against the per-node bounds
//! — with the scenario's events and the map's first down / out and the
//! return to full redundancy as vertical lines. Built from the runner's
//! plotting helpers (`plot.rs`).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::figures::SimFigures;
use super::record::{SimEventRecord, SimSecond};
use crate::plot::{
    Chart, DrawResult, FONT, LABELS, Marker, Second, label_rows, label_y, legend, line,
    linear_chart, mark, runs,
};

impl Second for SimSecond {
    fn second(&self) -> u64 {
        self.t
    }
}

const WIDTH: u32 = 1600;
const PANEL_HEIGHT: u32 = 420;
const MIB: f64 = 1_048_576.0;
const GIB: f64 = MIB * 1024.0;

const RED: RGBColor = RGBColor(200, 30, 30);
const ORANGE: RGBColor = RGBColor(230, 130, 0);
const PURPLE: RGBColor = RGBColor(150, 50, 170);
const GREEN: RGBColor = RGBColor(0, 140, 60);
const BLUE: RGBColor = RGBColor(30, 90, 200);
const TEAL: RGBColor = RGBColor(0, 150, 170);
const GREY: RGBColor = RGBColor(120, 120, 120);

/// Draws the simulation's plot into `path`.
pub fn draw(
    path: &Path,
    title: &str,
    rows: &[SimSecond],
    events: &[SimEventRecord],
    f: &SimFigures,
) -> anyhow::Result<()> {
    draw_inner(path, title, rows, events, f)
        .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

fn draw_inner(
    path: &Path,
    title: &str,
    rows: &[SimSecond],
    events: &[SimEventRecord],
    f: &SimFigures,
) -> DrawResult {
    let root = BitMapBackend::new(path, (WIDTH, PANEL_HEIGHT * 3)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 28))?;
    let panels = root.split_evenly((3, 1));
    // A tenth more than the run: room for the label of an event near its
    // end (full redundancy often is).
    let end = rows.len().max(1) as f64 * 1.1;
    let markers = markers(events);
    partitions(&panels[0], rows, &markers, end)?;
    rate_panels((&panels[1], &panels[2]), (rows, &markers, end), f)?;
    root.present()?;
    Ok(())
}

/// One vertical line per scenario event; for the map's states only the
/// first time each happened (a flapping node would draw a hundred), the
/// first two for Out and Removed (two racks lost apart), each with the
/// nodes that got the same state within the next few seconds (a rack goes
/// Down over two ticks, as its nodes' heartbeats fall due).
pub fn markers(events: &[SimEventRecord]) -> Vec<Marker> {
    const TOGETHER_S: f64 = 5.0;
    let mut seen: Vec<(&str, f64)> = Vec::new();
    let mut out: Vec<Marker> = Vec::new();
    for e in events {
        let times = match e.kind.as_str() {
            "down" | "up" => 1,
            "out" | "removed" => 2,
            _ => usize::MAX,
        };
        let once = times < usize::MAX;
        let earlier: Vec<f64> = seen
            .iter()
            .filter(|(k, _)| *k == e.kind)
            .map(|(_, t)| *t)
            .collect();
        if once && (earlier.len() >= times || earlier.iter().any(|t| e.t_s < t + TOGETHER_S)) {
            continue;
        }
        seen.push((e.kind.as_str(), e.t_s));
        let count = if once {
            events
                .iter()
                .filter(|o| o.kind == e.kind && o.t_s >= e.t_s && o.t_s < e.t_s + TOGETHER_S)
                .map(|o| o.nodes.len())
                .sum()
        } else {
            e.nodes.len()
        };
        let colour = match e.kind.as_str() {
            "down" => ORANGE,
            "out" => PURPLE,
            "redundant" | "up" | "back" => GREEN,
            "drain" => BLUE,
            "join" => TEAL,
            "removed" => GREY,
            _ => RED,
        };
        let who = match (e.kind.as_str(), count, e.nodes.first()) {
            ("redundant", _, _) | (_, 0, _) => String::new(),
            (_, 1, Some(one)) => format!(" n{one}"),
            (_, many, _) => format!(" ×{many}"),
        };
        out.push(Marker {
            t_s: e.t_s,
            label: format!("{}{who} ({:.0} s)", e.kind, e.t_s),
            colour,
        });
    }
    out
}

/// The runs of `value` as steps, a second wide each: horizontal and
/// vertical segments only. A thick line through a one-second spike makes
/// an angle near 0°, and plotters joins it with an unbounded miter on the
/// inner side: a spike of pixels shooting past the axis into the next
/// panel. Right angles (and reversals, which it treats as collinear) join
/// cleanly.
fn steps(rows: &[SimSecond], value: impl Fn(&SimSecond) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    runs(rows, value)
        .into_iter()
        .map(|piece| {
            let mut out: Vec<(f64, f64)> = Vec::with_capacity(piece.len());
            for (x, y) in piece {
                // `runs` puts each second at its middle.
                let (start, end) = (x - 0.5, x + 0.5);
                match out.last_mut() {
                    Some(last) if last.1 == y => last.0 = end,
                    _ => {
                        out.push((start, y));
                        out.push((end, y));
                    }
                }
            }
            out
        })
        .collect()
}

/// A horizontal line across the panel.
fn level(
    chart: &mut Chart<'_, '_, plotters::coord::types::RangedCoordf64>,
    name: &str,
    style: ShapeStyle,
    y: f64,
    end: f64,
) -> DrawResult {
    line(chart, name, style, vec![vec![(0.0, y), (end, y)]])
}

fn partitions(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    rows: &[SimSecond],
    markers: &[Marker],
    end: f64,
) -> DrawResult {
    let wide = rows.first().map_or(0, |r| r.by_live.len());
    let most = |v: &dyn Fn(&SimSecond) -> f64| rows.iter().map(v).fold(0.0, f64::max);
    // R − 1 left and the moves on the left axis, fewer left on the right:
    // a few hundred one-left partitions would not show next to thousands.
    let left_top =
        most(&|r| f64::from(r.left(wide.saturating_sub(1)).max(r.moves))).max(5.0) * 1.45;
    let right_top = most(&|r| {
        (0..wide.saturating_sub(1))
            .map(|k| f64::from(r.left(k)))
            .sum()
    })
    .max(5.0)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Under-replicated partitions by live replicas left, and moves in flight",
            (FONT, 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(LABELS)
        .right_y_label_area_size(LABELS)
        .build_cartesian_2d(0f64..end, 0f64..left_top)?
        .set_secondary_coord(0f64..end, 0f64..right_top);
    chart
        .configure_mesh()
        .x_desc("simulated seconds")
        .y_desc(format!("{} left, moves", wide.saturating_sub(1)))
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 16))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("fewer left")
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 16))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    if wide > 0 {
        let k = wide - 1;
        line(
            &mut chart,
            &format!("{k} live left (left axis)"),
            ORANGE.stroke_width(3),
            steps(rows, |r| Some(f64::from(r.left(k)))),
        )?;
    }
    line(
        &mut chart,
        "moves in flight (left axis)",
        GREEN.stroke_width(2),
        steps(rows, |r| Some(f64::from(r.moves))),
    )?;
    for k in (0..wide.saturating_sub(1)).rev() {
        let colour = if k == 0 { RED } else { PURPLE };
        let style = colour.stroke_width(3);
        for (i, piece) in steps(rows, |r| Some(f64::from(r.left(k))))
            .into_iter()
            .enumerate()
        {
            let series = chart.draw_secondary_series(LineSeries::new(piece, style))?;
            if i == 0 {
                series
                    .label(format!("{k} live left (right axis)"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            }
        }
    }
    let rows_of = label_rows(markers, end);
    let y = |i: usize| label_y(left_top, rows_of[i]);
    mark(&mut chart, markers, (0.0, left_top), Some(&y))?;
    // Middle left: the labels are at the top, and the recovery ends on
    // the right.
    legend(&mut chart, SeriesLabelPosition::MiddleLeft)
}

/// A line of a rates panel: its name, style and value per row.
type Series<'a> = (&'a str, ShapeStyle, &'a dyn Fn(&SimSecond) -> Option<f64>);

/// A panel of rates: `levels` (name, style, value) as horizontal lines,
/// `series` as steps, and the markers.
fn rates(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    (rows, markers, end): (&[SimSecond], &[Marker], f64),
    caption: &str,
    levels: &[(&str, ShapeStyle, f64)],
    series: &[Series<'_>],
) -> DrawResult {
    let peak = series
        .iter()
        .flat_map(|(_, _, value)| rows.iter().filter_map(*value))
        .fold(0.0, f64::max);
    let top = levels.iter().map(|l| l.2).fold(peak, f64::max) * 1.2;
    let mut chart = linear_chart(area, caption, "simulated seconds", end, top)?;
    for (name, style, y) in levels {
        level(&mut chart, name, *style, *y, end)?;
    }
    for (name, style, value) in series {
        line(&mut chart, name, *style, steps(rows, value))?;
    }
    mark(&mut chart, markers, (0.0, top), None)?;
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// The two rate panels: the cluster's bytes per second against its bound
/// (`upper`), the busiest node against the per-node bounds (`lower`).
fn rate_panels(
    (upper, lower): (
        &DrawingArea<BitMapBackend<'_>, Shift>,
        &DrawingArea<BitMapBackend<'_>, Shift>,
    ),
    frame: (&[SimSecond], &[Marker], f64),
    f: &SimFigures,
) -> DrawResult {
    let bound = f.cluster_bound / GIB;
    rates(
        upper,
        frame,
        "Recovery bytes sent per second, cluster-wide (GiB/s)",
        &[
            (
                "bound: min(max_moves, nodes) × bytes_per_sec",
                BLACK.stroke_width(2),
                bound,
            ),
            ("bound + 5%", GREY.stroke_width(1), bound * 1.05),
        ],
        &[("sent", BLUE.stroke_width(2), &|r| {
            Some(r.bytes as f64 / GIB)
        })],
    )?;
    rates(
        lower,
        frame,
        "Per-node recovery rates: the busiest node each second (MiB/s)",
        &[
            (
                "receive bound: max_moves_per_node × (rate + burst)",
                BLACK.stroke_width(2),
                f.receive_bound / MIB,
            ),
            (
                "send bound: bytes_per_sec + burst",
                GREY.stroke_width(2),
                f.send_bound / MIB,
            ),
        ],
        &[
            // Wide and pale, under the senders: a target usually receives
            // from one source, so the two lines often agree.
            (
                "most received by a node",
                TEAL.mix(0.5).stroke_width(7),
                &|r| Some(r.max_receive as f64 / MIB),
            ),
            ("most sent by a node", BLUE.stroke_width(2), &|r| {
                Some(r.max_send as f64 / MIB)
            }),
            ("median sender", ORANGE.stroke_width(2), &|r| {
                Some(r.median_send as f64 / MIB)
            }),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(t_s: f64, kind: &str, nodes: Vec<u64>) -> SimEventRecord {
        SimEventRecord {
            t_s,
            kind: kind.to_owned(),
            nodes,
            detail: String::new(),
        }
    }

    #[test]
    fn map_states_are_marked_once_or_twice() {
        let events = [
            event(10.0, "flap", vec![7]),
            event(20.0, "down", vec![7]),
            event(25.0, "up", vec![7]),
            event(40.0, "down", vec![7]),
            event(45.0, "up", vec![7]),
            event(100.0, "out", vec![7]),
            event(160.0, "out", vec![8]),
            event(190.0, "out", vec![9]),
            event(900.0, "redundant", vec![]),
        ];
        let labels: Vec<String> = markers(&events).into_iter().map(|m| m.label).collect();
        assert_eq!(
            labels,
            [
                "flap n7 (10 s)",
                "down n7 (20 s)",
                "up n7 (25 s)",
                "out n7 (100 s)",
                "out n8 (160 s)",
                "redundant (900 s)"
            ]
        );
        // A rack's nodes go down over two ticks: one line for all.
        let rack = [
            event(39.0, "down", vec![1, 2]),
            event(40.0, "down", vec![3]),
        ];
        assert_eq!(markers(&rack)[0].label, "down ×3 (39 s)");
        assert_eq!(
            markers(&[event(1.0, "rack_loss", (1..=20).collect())])[0].label,
            "rack_loss ×20 (1 s)"
        );
    }

    #[test]
    fn lines_are_drawn_as_steps_a_second_wide() {
        let row = |t: u64, moves: u32| SimSecond {
            t,
            moves,
            ..SimSecond::default()
        };
        let rows = [row(0, 5), row(1, 5), row(2, 9), row(3, 5)];
        let got = steps(&rows, |r| Some(f64::from(r.moves)));
        assert_eq!(
            got,
            [vec![
                (0.0, 5.0),
                (2.0, 5.0),
                (2.0, 9.0),
                (3.0, 9.0),
                (3.0, 5.0),
                (4.0, 5.0)
            ]]
        );
    }
}
