//! The simulation loop: simulated time in steps, the scenario's events,
//! every node's heartbeats, and once per heartbeat interval the leader's
//! tick with the node's real [`Detector`] and [`Checker`], their decisions
//! committed with the map's real `apply(Command)`; between ticks the
//! copies move as [`Transfers`]. Nothing here decides what the cluster
//! does: the loop only delivers time, heartbeats and bytes, and writes
//! down what happened.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use levee_node::cluster::NodeId;
use levee_node::cluster::map::{ClusterMap, Command, CommandResult, NodeState, RecoverySettings};
use levee_node::node::send_budget::effective_rate;
use levee_node::recovery::checker::{Checker, Plan, SMALL_PARTITION_BYTES};
use levee_node::recovery::detector::Detector;
use rand::rngs::StdRng;

use self::events::Action;
use super::flows::{Transfers, World};
use super::record::{Cost, NodeTotals, SimEventRecord, SimSecond, States};
use super::scenario::SimScenario;
use super::topology::{self, SimNode};

mod events;
mod priority;

/// Everything a run produced.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// One row per simulated second.
    pub rows: Vec<SimSecond>,
    /// What happened, in time order.
    pub events: Vec<SimEventRecord>,
    /// Every node's totals, by id.
    pub nodes: Vec<NodeTotals>,
    /// (second, node, sent, received) for every node that moved recovery
    /// bytes in that second.
    pub node_seconds: Vec<(u64, NodeId, u64, u64)>,
    /// Moves the checker started (that the map accepted).
    pub moves_started: u64,
    /// Moves whose copy finished (`FinishMove`).
    pub moves_finished: u64,
    /// Moves cancelled by the checker or dropped by the map.
    pub moves_cancelled: u64,
    /// Distinct nodes the map marked Out.
    pub nodes_marked_out: Vec<NodeId>,
    /// Nodes a guard held from Out at some tick, with the guard.
    pub held: BTreeMap<NodeId, String>,
    /// Bytes of the copies that finished, and the largest of them.
    pub bytes_finished: u64,
    /// The largest partition copied.
    pub largest_copied: u64,
    /// Ticks where the checker started a move of a partition with two or
    /// more live replicas while one with a single live replica and a
    /// source free to send waited: priority inversions.
    pub inversions: u64,
    /// Single-live-replica partitions that waited in such a tick because
    /// their live replica was already sending its share or no target was
    /// free (not an inversion: no other order would have started them).
    pub one_left_source_busy: u64,
    /// The first second with a partition at one live replica, and the
    /// first second after which none was left; same for two.
    pub left_windows: BTreeMap<usize, (u64, u64)>,
    /// Per-node recovery rate the model assumes: the mean over the
    /// serving nodes, when the first node went Out or Draining, of
    /// `min(bytes_per_sec × max(floor, 1 − pressure), spare bytes/s)`.
    pub model_rate: Option<f64>,
    /// The slowest of those rates.
    pub slowest_rate: Option<f64>,
    /// Each Draining node at that time: the bytes and partitions it
    /// holds and its send rate (as above). A replaced node that runs is
    /// the only source of its copies (`transfer::sources`), so each must
    /// send all of it.
    pub fixed_senders: Vec<(u64, u64, f64)>,
    /// When that was (simulated ms).
    pub work_ms: Option<u64>,
    /// Replicas the placement moved at joins (copied by anti-entropy,
    /// outside the recovery budget), and their bytes.
    pub join_reassigned: (u64, u64),
    /// Wall time of each `AddNode` apply (ms).
    pub join_apply_ms: Vec<f64>,
    /// The checker's `plan`, per leader tick.
    pub checker_cost: Cost,
    /// The detector's `evaluate`, per leader tick.
    pub detector_cost: Cost,
    /// Committing the tick's commands with `apply`, per leader tick.
    pub apply_cost: Cost,
    /// Building the starting map (ms, wall).
    pub setup_ms: f64,
    /// The whole simulation (s, wall).
    pub wall_s: f64,
}

/// The running simulation.
pub struct Engine<'a> {
    s: &'a SimScenario,
    settings: RecoverySettings,
    map: ClusterMap,
    detector: Detector,
    checker: Checker,
    /// Node facts by id (index 0 unused).
    nodes: Vec<Option<SimNode>>,
    /// How many losses hold each node silent now (by id).
    silenced: Vec<u32>,
    /// Client load (= pressure) of each node now (by id).
    load: Vec<f64>,
    sizes: Vec<u64>,
    transfers: Transfers,
    /// Actions by simulated ms, in order.
    actions: Vec<(u64, Action)>,
    /// Nodes by heartbeat phase (phase / step).
    phases: Vec<Vec<NodeId>>,
    rng: StdRng,
    t0: Instant,
    now_ms: u64,
    /// The last tick's plan figures.
    waiting: u32,
    unrecoverable: u32,
    held_now: u32,
    /// Bytes of the current second, by id.
    sent: Vec<u64>,
    received: Vec<u64>,
    costs: (Vec<u64>, Vec<u64>, Vec<u64>),
    run: Run,
}

impl<'a> Engine<'a> {
    /// The cluster of the scenario, every node Up, at time 0.
    pub fn new(s: &'a SimScenario) -> anyhow::Result<Self> {
        let setup = Instant::now();
        let settings = s.recovery_settings()?;
        let mut rng = topology::rng(s.seed);
        let start = topology::nodes(s, &mut rng);
        let sizes =
            topology::partition_sizes(s.cluster.partition_size, s.cluster.partitions, &mut rng);
        let map = topology::initial_map(s, &start, settings)?;
        let t0 = Instant::now();
        let mut detector = Detector::new();
        detector.start_leading(&map, t0, 0);
        let checker = Checker::new(&map.recovery, t0);
        let mut engine = Self {
            s,
            settings,
            map,
            detector,
            checker,
            nodes: vec![None],
            silenced: vec![0],
            load: vec![0.0],
            sizes,
            transfers: Transfers::default(),
            actions: Vec::new(),
            phases: vec![Vec::new(); (s.heartbeat_ms / s.step_ms) as usize],
            rng,
            t0,
            now_ms: 0,
            waiting: 0,
            unrecoverable: 0,
            held_now: 0,
            sent: vec![0],
            received: vec![0],
            costs: Default::default(),
            run: Run::default(),
        };
        for n in start {
            engine.add(n);
        }
        engine.schedule();
        engine.spread_load();
        engine.run.setup_ms = setup.elapsed().as_secs_f64() * 1000.0;
        Ok(engine)
    }

    /// Bytes of one replica of every partition.
    pub fn stored_bytes(&self) -> u64 {
        self.sizes.iter().sum()
    }

    /// Runs to the end of the scenario.
    pub fn run(mut self) -> Run {
        let wall = Instant::now();
        let step = self.s.step_ms;
        let end = self.s.duration_s * 1000;
        let mut next_action = 0;
        while self.now_ms < end {
            while let Some((at, action)) = self.actions.get(next_action).cloned()
                && at <= self.now_ms
            {
                self.act(action);
                next_action += 1;
            }
            self.heartbeats();
            if self.now_ms.is_multiple_of(self.s.heartbeat_ms) {
                self.tick();
            }
            self.copy();
            self.now_ms += step;
            if self.now_ms.is_multiple_of(1000) {
                self.second();
            }
        }
        self.finish(wall)
    }

    fn instant(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    fn alive(&self, id: NodeId) -> bool {
        self.silenced.get(id as usize).is_some_and(|s| *s == 0)
    }

    /// Adds a node's facts (at start, or when it joins).
    fn add(&mut self, n: SimNode) {
        let i = n.id as usize;
        for v in [&mut self.silenced] {
            if v.len() <= i {
                v.resize(i + 1, 0);
            }
        }
        for v in [&mut self.sent, &mut self.received] {
            if v.len() <= i {
                v.resize(i + 1, 0);
            }
        }
        if self.load.len() <= i {
            self.load.resize(i + 1, 0.0);
        }
        if self.nodes.len() <= i {
            self.nodes.resize(i + 1, None);
        }
        let phase = (n.phase_ms / self.s.step_ms) as usize;
        if let Some(bucket) = self.phases.get_mut(phase) {
            bucket.push(n.id);
        }
        self.nodes[i] = Some(n);
    }

    /// Delivers the heartbeats due this step (each node beats once per
    /// interval, at its own phase) to the detector.
    fn heartbeats(&mut self) {
        let phase = ((self.now_ms % self.s.heartbeat_ms) / self.s.step_ms) as usize;
        let now = self.instant();
        let Some(bucket) = self.phases.get(phase) else {
            return;
        };
        for id in bucket {
            if self.silenced.get(*id as usize).is_some_and(|s| *s == 0)
                && self.map.state_of(*id) != Some(NodeState::Removed)
            {
                self.detector.beat(*id, now);
            }
        }
    }

    /// The leader's tick, as `recovery/leader.rs` does it: the detector's
    /// transitions committed, then the checker's plan. Once a heartbeat,
    /// where the node's leader ticks every quarter heartbeat
    /// (`recovery::leader::tick`) and on map changes: a simulated state
    /// change can come up to three quarters of a heartbeat later than a
    /// node's, and a freed move slot waits for the next tick.
    fn tick(&mut self) {
        let now = self.instant();
        let wall = Instant::now();
        let transitions = self.detector.evaluate(&self.map, now);
        self.costs.1.push(wall.elapsed().as_micros() as u64);
        let mut apply_us = 0;
        let mut changed: Vec<(NodeState, Vec<NodeId>)> = Vec::new();
        for t in &transitions {
            let wall = Instant::now();
            self.commit(Command::SetNodeState {
                id: t.node,
                state: t.to,
                at_ms: self.now_ms,
            });
            apply_us += wall.elapsed().as_micros() as u64;
            match changed.iter_mut().find(|(state, _)| *state == t.to) {
                Some((_, nodes)) => nodes.push(t.node),
                None => changed.push((t.to, vec![t.node])),
            }
            if t.to == NodeState::Out && !self.run.nodes_marked_out.contains(&t.node) {
                self.run.nodes_marked_out.push(t.node);
            }
        }
        for (state, nodes) in changed {
            self.record_state(state, nodes);
        }
        if transitions.iter().any(|t| t.to == NodeState::Out) {
            self.note_work();
        }
        if !transitions.is_empty() {
            self.spread_load();
        }
        let pressure: BTreeMap<NodeId, f64> = self
            .nodes
            .iter()
            .flatten()
            .filter(|n| self.alive(n.id))
            .map(|n| (n.id, self.load[n.id as usize]))
            .collect();
        // What the replicas' heartbeats would report: the partitions
        // under the checker's small size (none at the scenarios' sizes).
        let small: BTreeSet<u32> = (0u32..)
            .zip(&self.sizes)
            .filter(|(_, size)| **size < SMALL_PARTITION_BYTES)
            .map(|(p, _)| p)
            .collect();
        let wall = Instant::now();
        let plan = self
            .checker
            .plan_sized(&self.map, &pressure, &small, now, self.now_ms);
        self.costs.0.push(wall.elapsed().as_micros() as u64);
        let started_live: Vec<usize> = plan
            .start
            .iter()
            .map(|(p, _)| self.map.live_replicas(*p))
            .collect();
        let wall = Instant::now();
        self.commit_plan(&plan);
        apply_us += wall.elapsed().as_micros() as u64;
        self.costs.2.push(apply_us);
        if started_live.iter().any(|live| *live >= 2) {
            self.check_priority();
        }
        self.waiting = plan.waiting as u32;
        self.unrecoverable = plan.unrecoverable.len() as u32;
        let held = self.detector.held_by_guard(&self.map, now);
        self.held_now = held.len() as u32;
        for (id, guard) in held {
            self.run.held.insert(id, guard.to_owned());
        }
        self.reconcile();
    }

    /// Flows for the map's moves (see [`Transfers::reconcile`]); every
    /// move that gets a flow is a move started.
    fn reconcile(&mut self) {
        let started = self
            .transfers
            .reconcile(&self.map, &self.sizes, self.now_ms);
        self.run.moves_started += started as u64;
    }

    /// Commits a plan as the leader's `apply_plan` does: cancels, starts,
    /// removals.
    fn commit_plan(&mut self, plan: &Plan) {
        if !plan.cancel.is_empty() {
            let before = self.map.moves.len();
            self.commit(Command::CancelMoves(plan.cancel.clone()));
            self.run.moves_cancelled += (before - self.map.moves.len()) as u64;
        }
        if !plan.start.is_empty() {
            self.commit(Command::StartMoves(plan.start.clone()));
        }
        if !plan.remove.is_empty() {
            for id in &plan.remove {
                self.commit(Command::SetNodeState {
                    id: *id,
                    state: NodeState::Removed,
                    at_ms: self.now_ms,
                });
            }
            self.record_state(NodeState::Removed, plan.remove.clone());
        }
    }

    fn commit(&mut self, command: Command) {
        // A refusal is what the leader's `commit` logs and moves on from:
        // the next tick plans from the map as it is.
        let moves = self.map.moves.len();
        let dropped_by_state = matches!(command, Command::SetNodeState { .. });
        self.map.apply(&command);
        if dropped_by_state {
            self.run.moves_cancelled += moves.saturating_sub(self.map.moves.len()) as u64;
        }
    }

    fn record_state(&mut self, state: NodeState, nodes: Vec<NodeId>) {
        self.run.events.push(SimEventRecord {
            t_s: self.now_ms as f64 / 1000.0,
            kind: state.to_string(),
            detail: format!("{} nodes", nodes.len()),
            nodes,
        });
    }

    /// At the first Out or drain: the per-node rate the model assumes.
    fn note_work(&mut self) {
        if self.run.work_ms.is_some() {
            return;
        }
        self.spread_load();
        let rates = |state: NodeState| -> Vec<(NodeId, f64)> {
            self.nodes
                .iter()
                .flatten()
                .filter(|n| self.alive(n.id) && self.map.state_of(n.id) == Some(state))
                .map(|n| {
                    let load = self.load[n.id as usize];
                    (
                        n.id,
                        effective_rate(&self.settings, load).min(n.spare(load)),
                    )
                })
                .collect()
        };
        let up: Vec<f64> = rates(NodeState::Up).into_iter().map(|(_, r)| r).collect();
        let draining = rates(NodeState::Draining);
        if !up.is_empty() {
            self.run.model_rate = Some(up.iter().sum::<f64>() / up.len() as f64);
            self.run.slowest_rate = up.iter().copied().reduce(f64::min);
        }
        self.run.fixed_senders = draining
            .into_iter()
            .map(|(id, rate)| {
                let (bytes, partitions) = (0..self.map.partitions)
                    .filter(|p| self.map.replicas(*p).contains(&id))
                    .fold((0u64, 0u64), |(b, n), p| {
                        (b + self.sizes.get(p as usize).copied().unwrap_or(0), n + 1)
                    });
                (bytes, partitions, rate)
            })
            .collect();
        self.run.work_ms = Some(self.now_ms);
    }

    /// One step of the copies; finished ones are committed (`FinishMove`).
    fn copy(&mut self) {
        let alive: Vec<bool> = self.silenced.iter().map(|s| *s == 0).collect();
        let world = World {
            map: &self.map,
            settings: &self.map.recovery,
            nodes: &self.nodes,
            alive: &alive,
            load: &self.load,
            t0: self.t0,
        };
        let moved = self.transfers.step(&world, self.now_ms, self.s.step_ms);
        for (id, bytes) in moved.sent {
            self.sent[id as usize] += bytes;
        }
        for (id, bytes) in moved.received {
            self.received[id as usize] += bytes;
        }
        if moved.finished.is_empty() {
            return;
        }
        for (partition, to) in moved.finished {
            let size = self.sizes.get(partition as usize).copied().unwrap_or(0);
            if let CommandResult::Applied { .. } =
                self.map.apply(&Command::FinishMove { partition, to })
            {
                self.run.moves_finished += 1;
                self.run.bytes_finished += size;
                self.run.largest_copied = self.run.largest_copied.max(size);
            }
        }
        self.reconcile();
    }

    /// The end of a simulated second: its row, and each node's part.
    fn second(&mut self) {
        let t = self.now_ms / 1000 - 1;
        let states = States::of(&self.map);
        let mut row = SimSecond::of(t, &self.map, &states, &self.sent, &self.received);
        row.waiting = self.waiting;
        row.unrecoverable = self.unrecoverable;
        row.held = self.held_now;
        for live in 1..usize::from(self.map.settings.replicas) {
            if row.left(live) > 0 {
                let w = self.run.left_windows.entry(live).or_insert((t, t + 1));
                w.1 = t + 1;
            }
        }
        for (id, (sent, received)) in self
            .sent
            .iter_mut()
            .zip(self.received.iter_mut())
            .enumerate()
        {
            if *sent == 0 && *received == 0 {
                continue;
            }
            self.run
                .node_seconds
                .push((t, id as NodeId, *sent, *received));
            if self.run.nodes.len() <= id {
                self.run.nodes.resize(id + 1, NodeTotals::default());
            }
            let totals = &mut self.run.nodes[id];
            totals.sent += *sent;
            totals.received += *received;
            totals.peak_send = totals.peak_send.max(*sent);
            totals.peak_receive = totals.peak_receive.max(*received);
            *sent = 0;
            *received = 0;
        }
        self.run.rows.push(row);
    }

    fn finish(mut self, wall: Instant) -> Run {
        self.run.wall_s = wall.elapsed().as_secs_f64();
        self.run.checker_cost = Cost::of(&self.costs.0);
        self.run.detector_cost = Cost::of(&self.costs.1);
        self.run.apply_cost = Cost::of(&self.costs.2);
        let mut nodes = std::mem::take(&mut self.run.nodes);
        nodes.resize(self.nodes.len(), NodeTotals::default());
        for (id, n) in self.nodes.iter().enumerate() {
            if let (Some(n), Some(t)) = (n, nodes.get_mut(id)) {
                t.id = n.id;
                t.zone = n.zone;
                t.rack = n.rack;
            }
        }
        self.run.nodes = nodes.into_iter().filter(|n| n.id != 0).collect();
        // Redundant: the second after the last one with something under-
        // replicated or moving, if the run ends clean and had any.
        let dirty = |r: &SimSecond| r.under_replicated > 0 || r.moves > 0;
        if let Some(last) = self.run.rows.iter().rposition(dirty)
            && last + 1 < self.run.rows.len()
        {
            self.run.events.push(SimEventRecord {
                t_s: (last + 1) as f64,
                kind: "redundant".to_owned(),
                nodes: Vec::new(),
                detail: "every partition has R Up replicas, no move in flight".to_owned(),
            });
        }
        self.run.events.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        self.run
    }
}
