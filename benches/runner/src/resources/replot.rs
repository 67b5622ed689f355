//! `levee-bench replot DIR` (`levee bench replot DIR`): draws
//! `DIR/resources.png` again from `DIR/result.json` with this build's
//! plotting, so a half-hour soak need not run again to be drawn anew.
//! Reading the file is here; [`parse`] is pure.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use super::{NodeSamples, Resources, ResourcesConfig, Series, flatness};
use crate::cluster::Event;
use crate::plot_resources;
use crate::recovery;
use crate::report::Machine;
use crate::scenario::FaultAction;

/// Arguments of `levee-bench replot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run's directory: its result.json is read, its resources.png
    /// written.
    dir: PathBuf,
}

/// Redraws `resources.png` in `args.dir`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let path = args.dir.join("result.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let (resources, events) = parse(&json).with_context(|| {
        format!(
            "{} has no resource samples (a scenario with [resources] writes them)",
            path.display()
        )
    })?;
    let machine: Machine = serde_json::from_value(json["machine"].clone())
        .with_context(|| format!("{}: machine", path.display()))?;
    let name = json["scenario"]["name"].as_str().unwrap_or("scenario");
    let out = args.dir.join("resources.png");
    plot_resources::draw(
        &out,
        &plot_resources::title(name, &machine),
        &resources,
        &events,
    )?;
    println!("levee bench: wrote {}", out.display());
    Ok(())
}

/// The samples and the events of a result.json; `None` without samples.
/// Events of a kind this build does not know are left out.
pub fn parse(json: &Value) -> Option<(Resources, Vec<Event>)> {
    let r = &json["resources"];
    let config: ResourcesConfig = serde_json::from_value(r["config"].clone()).ok()?;
    let nodes: Vec<NodeSamples> = r["nodes"]
        .as_array()?
        .iter()
        .filter_map(|n| {
            let node = u8::try_from(n["node"].as_u64()?).ok()?;
            let mut samples = NodeSamples::empty(node, 0);
            for s in Series::ALL {
                // A series this run did not sample (an older result.json)
                // is all gaps: no figure, the others still drawn.
                let values = n[s.key()]
                    .as_array()
                    .map(|v| v.iter().map(Value::as_f64).collect())
                    .unwrap_or_default();
                samples.series.insert(s.key(), values);
            }
            Some(samples)
        })
        .collect();
    let events: Vec<Event> = json["events"]
        .as_array()
        .map(|all| all.iter().filter_map(event).collect())
        .unwrap_or_default();
    let restarted: Vec<(u8, f64)> = events
        .iter()
        .filter(|e| e.kind == "fault" && e.action == Some(FaultAction::Restart))
        .map(|e| (e.node, e.t_s))
        .collect();
    let resources = Resources {
        config,
        flatness: flatness::of(&nodes, &restarted, config),
        nodes,
    };
    Some((resources, events))
}

fn event(e: &Value) -> Option<Event> {
    let kinds = [
        "fault",
        "fault_failed",
        "serving",
        recovery::DOWN,
        recovery::OUT,
        recovery::REDUNDANT,
    ];
    let kind = kinds.into_iter().find(|k| e["kind"] == *k)?;
    Some(Event {
        t_s: e["t_s"].as_f64()?,
        kind,
        action: serde_json::from_value(e["action"].clone()).ok().flatten(),
        node: u8::try_from(e["node"].as_u64()?).ok()?,
        detail: e["detail"].as_str().unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_gives_back_its_samples_and_events() {
        let mut node = NodeSamples::empty(2, 3);
        node.series
            .insert(Series::OpenFds.key(), vec![Some(40.0), None, Some(41.0)]);
        let config = ResourcesConfig {
            warmup_s: 0,
            window_s: 1,
        };
        let json = serde_json::json!({
            "resources": { "config": config, "nodes": [node] },
            "events": [
                { "t_s": 1.5, "kind": "fault", "action": "restart", "node": 2, "detail": "restart node 2" },
                { "t_s": 1.7, "kind": "down", "action": null, "node": 3, "detail": "" },
                { "t_s": 2.0, "kind": "something new", "action": null, "node": 1, "detail": "" },
            ],
        });
        let (r, events) = parse(&json).expect("samples");
        assert_eq!(r.nodes[0].node, 2);
        assert_eq!(
            r.nodes[0].values(Series::OpenFds),
            [Some(40.0), None, Some(41.0)]
        );
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.action)).collect();
        assert_eq!(
            kinds,
            [("fault", Some(FaultAction::Restart)), ("down", None)]
        );
        // Node 2 restarted at 1.5 s: measured from 2 s.
        assert!(r.flatness.iter().all(|f| f.process_from_s == 2));
        assert!(parse(&serde_json::json!({ "events": [] })).is_none());
    }

    proptest::proptest! {
        /// `parse` reads a file from disk: any config, restart time and
        /// sample gives an answer, never a panic (overflowing windows
        /// included).
        #[test]
        fn any_result_json_parses_without_panicking(
            warmup_s in proptest::prelude::any::<u64>(),
            window_s in proptest::prelude::any::<u64>(),
            restart_t in proptest::prelude::any::<f64>(),
            node in 0u64..300,
            values in proptest::collection::vec(
                proptest::option::of(proptest::prelude::any::<f64>()),
                0..50,
            ),
        ) {
            let series: serde_json::Map<String, Value> = Series::ALL
                .iter()
                .map(|s| (s.key().to_owned(), serde_json::json!(values)))
                .collect();
            let mut node_json = serde_json::json!({ "node": node });
            if let Value::Object(fields) = &mut node_json {
                fields.extend(series);
            }
            let json = serde_json::json!({
                "resources": {
                    "config": { "warmup_s": warmup_s, "window_s": window_s },
                    "nodes": [node_json, 7, { "node": "x" }],
                },
                "events": [
                    { "t_s": restart_t, "kind": "fault", "action": "restart", "node": node, "detail": 3 },
                    "not an event",
                ],
            });
            let _ = parse(&json);
        }
    }
}
