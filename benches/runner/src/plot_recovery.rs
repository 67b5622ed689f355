//! The recovery panel of timeline.png and comparison.png: recovery bytes
//! per second (the leader's cluster-wide rate over its last 5 s, MiB/s,
//! left axis) against under-replicated partitions and moves in flight
//! (right axis), so a reader sees when copying ran, how fast, and when
//! redundancy came back. Drawn only for a run where something was
//! under-replicated or copied.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::plot::{DrawResult, FONT, LABELS, Marker, legend, mark, runs};
use super::timeline::SecondRow;

/// What a line plots from each row.
pub(super) type Value = fn(&SecondRow) -> Option<f64>;

/// Recovery MiB/s of a row (the leader's cluster-wide rate).
pub(super) const MIB_PER_S: Value = |r| {
    r.cluster
        .as_ref()?
        .recovery
        .as_ref()
        .map(|x| x.bytes_per_sec as f64 / f64::from(1u32 << 20))
};

/// Under-replicated partitions of a row.
pub(super) const UNDER_REPLICATED: Value =
    |r| r.cluster.as_ref().map(|c| c.under_replicated as f64);

/// Moves in flight of a row.
pub(super) const MOVES: Value = |r| r.cluster.as_ref().map(|c| c.moves as f64);

/// One line of the panel.
pub(super) struct Series<'a> {
    /// Its legend entry.
    pub name: String,
    /// Its colour.
    pub colour: RGBColor,
    /// The rows it is drawn from.
    pub rows: &'a [SecondRow],
    /// What it plots.
    pub value: Value,
    /// On the right (partitions) axis rather than the left (MiB/s) one.
    pub right: bool,
    /// Dashed, to tell it apart from a solid line of the same colour.
    pub dashed: bool,
}

/// Whether a run has anything for the panel: a partition under-replicated,
/// a move, or recovery bytes in some sample.
pub(super) fn has_recovery(rows: &[SecondRow]) -> bool {
    rows.iter().filter_map(|r| r.cluster.as_ref()).any(|c| {
        c.under_replicated > 0
            || c.moves > 0
            || c.recovery.as_ref().is_some_and(|x| x.bytes_per_sec > 0)
    })
}

/// The highest value of the series on one axis.
fn highest(series: &[Series<'_>], right: bool) -> f64 {
    series
        .iter()
        .filter(|s| s.right == right)
        .flat_map(|s| s.rows.iter().filter_map(s.value))
        .fold(0.0, f64::max)
}

/// Draws the panel.
pub(super) fn draw(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    series: &[Series<'_>],
    markers: &[Marker],
    end: f64,
) -> DrawResult {
    // At least 0..1 MiB/s and 0..6 partitions, so labels stay distinct.
    let left = highest(series, false).max(1.0) * 1.2;
    let right = highest(series, true).max(5.0) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Recovery: bytes/s copied (cluster-wide, 5 s window; left) and partitions (right)",
            (FONT, 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(LABELS)
        .right_y_label_area_size(LABELS)
        .build_cartesian_2d(0f64..end, 0f64..left)?
        .set_secondary_coord(0f64..end, 0f64..right);
    chart
        .configure_mesh()
        .x_desc("seconds since the start of the run")
        .y_desc("MiB/s")
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 16))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("partitions")
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 16))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for s in series {
        let style = s.colour.stroke_width(if s.dashed { 2 } else { 3 });
        for (i, piece) in runs(s.rows, s.value).into_iter().enumerate() {
            let anno = match (s.right, s.dashed) {
                (true, true) => {
                    chart.draw_secondary_series(DashedLineSeries::new(piece, 10, 6, style))?
                }
                (true, false) => chart.draw_secondary_series(LineSeries::new(piece, style))?,
                (false, true) => chart.draw_series(DashedLineSeries::new(piece, 10, 6, style))?,
                (false, false) => chart.draw_series(LineSeries::new(piece, style))?,
            };
            if i > 0 {
                continue;
            }
            let anno = anno.label(s.name.as_str());
            if s.dashed {
                anno.legend(move |(x, y)| {
                    plotters::element::DashedPathElement::new(
                        vec![(x, y), (x + 24, y)],
                        6,
                        4,
                        style,
                    )
                });
            } else {
                anno.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            }
        }
    }
    mark(&mut chart, markers, (0.0, left), None)?;
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// The panel's lines for one run: MiB/s, under-replicated partitions and
/// moves in flight.
pub(super) fn run_series(rows: &[SecondRow]) -> Vec<Series<'_>> {
    vec![
        Series {
            name: "recovery MiB/s".to_owned(),
            colour: RGBColor(30, 90, 200),
            rows,
            value: MIB_PER_S,
            right: false,
            dashed: false,
        },
        Series {
            name: "under-replicated partitions".to_owned(),
            colour: RGBColor(230, 130, 0),
            rows,
            value: UNDER_REPLICATED,
            right: true,
            dashed: true,
        },
        Series {
            name: "moves in flight".to_owned(),
            colour: RGBColor(40, 160, 80),
            rows,
            value: MOVES,
            right: true,
            dashed: false,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::tests::{row, sample};
    use crate::timeline::RecoverySample;

    #[test]
    fn the_panel_is_for_runs_that_lost_redundancy_or_copied() {
        let calm = vec![row(0, Some(sample(&[(1, "up")], 0, 0))), row(1, None)];
        assert!(!has_recovery(&calm));
        let mut copying = sample(&[(1, "up")], 0, 0);
        copying.recovery = Some(RecoverySample {
            bytes_per_sec: 3 << 20,
            ..RecoverySample::default()
        });
        let rows = vec![row(0, Some(copying))];
        assert!(has_recovery(&rows));
        assert_eq!(MIB_PER_S(&rows[0]), Some(3.0));
        assert!(has_recovery(&[row(0, Some(sample(&[(1, "down")], 4, 0)))]));
        assert_eq!(UNDER_REPLICATED(&calm[1]), None);
    }
}
