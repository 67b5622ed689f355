//! The pure half of the suite: what the writer runs said they wrote and
//! had acknowledged, checked against what a reopened directory holds.
//! No process, file or clock in here; the tests at the bottom feed it
//! lines by hand, a loss among them, so a checker that could never fail
//! would be seen.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use levee_node::storage::Version;

use crate::protocol::{Found, Key, Line};

/// Everything known of the keys of one directory: fed every writer run's
/// lines ([`History::record`]), asked after every reopen ([`History::check`]).
#[derive(Debug, Default)]
pub struct History {
    keys: BTreeMap<Key, KeyHistory>,
}

#[derive(Debug, Default)]
struct KeyHistory {
    /// Versions written to the key (a `start` line was printed) at or
    /// above `acked`: a record with any of them was written by someone.
    /// Those below `acked` are dropped, since finding one is a loss
    /// whoever wrote it.
    issued: BTreeSet<Version>,
    /// The newest acknowledged write: what a reopen must find, or newer.
    acked: Option<Version>,
    /// The newest version a reopen has read back: data on disk, which a
    /// later reopen must not find older or gone either.
    seen: Option<Version>,
}

/// What one writer run said, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunCounts {
    /// Writes acknowledged (`ack` lines).
    pub acks: u64,
    /// Writes that returned an error (not acknowledged, so not checked).
    pub failed: u64,
}

/// What a reopen found, judged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Keys whose newest acknowledged write was checked against a
    /// readable record (or its absence).
    pub acks_checked: u64,
    /// Acknowledged writes not found: the key is absent or holds an older
    /// version.
    pub lost: u64,
    /// Records failing their crc32c check: counted, not data; on a node
    /// a replica has the value.
    pub crc_errors: u64,
    /// Records whose header does not decode.
    pub header_errors: u64,
    /// Keys with an acknowledged write whose record is one of the two
    /// above: not readable here, so neither checked nor lost.
    pub acks_behind_corrupt: u64,
    /// Everything that must never happen, losses included.
    pub violations: Vec<Violation>,
}

/// Something the storage must never do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged write is gone: the key is absent or older.
    Lost {
        key: Key,
        acked: Version,
        found: Option<Version>,
    },
    /// A version nobody wrote to this key.
    Unwritten { key: Key, found: Version },
    /// The record's version was written, but its content is not what
    /// that write stored (a value the crc did not catch).
    WrongContent {
        key: Key,
        version: Version,
        found: Found,
    },
    /// Older than (or missing after) a version read back from disk
    /// before: durable data went back in time.
    Regressed {
        key: Key,
        seen: Version,
        found: Option<Version>,
    },
    /// The store called a write stale although no newer version had been
    /// written: it holds a version from nowhere.
    StaleAck {
        key: Key,
        version: Version,
        current: Version,
    },
    /// Reading the key failed other than by a corrupt record.
    Unreadable { key: Key, error: String },
    /// A key no writer writes, found by a scan.
    Stray { partition: u32, key: String },
    /// A partition scan failed.
    ScanFailed { partition: u32, error: String },
    /// The reopen reported a key twice, or not at all.
    Unreported { key: Key },
    /// A line the reopen must not print (a writer's line, say).
    Unexpected { line: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = |k: &Key| format!("w{}/k{:02}", k.writer, k.index);
        let version = |v: &Option<Version>| v.map_or("nothing".to_string(), |v| v.to_string());
        match self {
            Violation::Lost {
                key: k,
                acked,
                found,
            } => write!(
                f,
                "lost: {} acknowledged {acked}, found {}",
                key(k),
                version(found)
            ),
            Violation::Unwritten { key: k, found } => {
                write!(
                    f,
                    "unwritten: {} holds {found}, never written to it",
                    key(k)
                )
            }
            Violation::WrongContent {
                key: k,
                version: v,
                found,
            } => write!(f, "wrong content: {} at {v} holds {found:?}", key(k)),
            Violation::Regressed {
                key: k,
                seen,
                found,
            } => write!(
                f,
                "regressed: {} was read back at {seen}, now {}",
                key(k),
                version(found)
            ),
            Violation::StaleAck {
                key: k,
                version: v,
                current,
            } => write!(f, "stale ack: {} at {v}, store said {current}", key(k)),
            Violation::Unreadable { key: k, error } => {
                write!(f, "unreadable: {}: {error}", key(k))
            }
            Violation::Stray { partition, key } => {
                write!(f, "stray key in partition {partition}: {key}")
            }
            Violation::ScanFailed { partition, error } => {
                write!(f, "scan of partition {partition} failed: {error}")
            }
            Violation::Unreported { key: k } => {
                write!(f, "unreported: {} not reported exactly once", key(k))
            }
            Violation::Unexpected { line } => write!(f, "unexpected line: {line}"),
        }
    }
}

impl History {
    /// Takes in a writer run's lines; returns what they count and the
    /// violations they show by themselves (a stale acknowledgement).
    pub fn record(&mut self, lines: &[Line]) -> (RunCounts, Vec<Violation>) {
        let mut counts = RunCounts::default();
        let mut violations = Vec::new();
        for line in lines {
            match line {
                Line::Start { key, version } => {
                    self.key(*key).issued.insert(*version);
                }
                Line::Ack {
                    key,
                    version,
                    stale,
                } => {
                    counts.acks += 1;
                    if let Some(current) = stale {
                        violations.push(Violation::StaleAck {
                            key: *key,
                            version: *version,
                            current: *current,
                        });
                    }
                    self.key(*key).acknowledge(*version);
                }
                Line::Failed { .. } => counts.failed += 1,
                _ => {}
            }
        }
        (counts, violations)
    }

    /// Judges a reopen's lines (`verify`'s, complete) against everything
    /// recorded so far, and remembers what it read back.
    pub fn check(&mut self, lines: &[Line]) -> Verdict {
        let mut verdict = Verdict::default();
        let mut reported = BTreeMap::<Key, u32>::new();
        for line in lines {
            match line {
                Line::Record {
                    key,
                    version,
                    found,
                } => {
                    *reported.entry(*key).or_default() += 1;
                    self.key(*key)
                        .check_found(*key, Some((*version, *found)), &mut verdict);
                }
                Line::Absent { key } => {
                    *reported.entry(*key).or_default() += 1;
                    self.key(*key).check_found(*key, None, &mut verdict);
                }
                Line::Corrupt { key, crc, .. } => {
                    *reported.entry(*key).or_default() += 1;
                    if *crc {
                        verdict.crc_errors += 1;
                    } else {
                        verdict.header_errors += 1;
                    }
                    if self.key(*key).acked.is_some() {
                        verdict.acks_behind_corrupt += 1;
                    }
                }
                Line::Unreadable { key, error } => {
                    *reported.entry(*key).or_default() += 1;
                    verdict.violations.push(Violation::Unreadable {
                        key: *key,
                        error: error.clone(),
                    });
                }
                Line::Stray { partition, key } => verdict.violations.push(Violation::Stray {
                    partition: *partition,
                    key: key.clone(),
                }),
                Line::ScanFailed { partition, error } => {
                    verdict.violations.push(Violation::ScanFailed {
                        partition: *partition,
                        error: error.clone(),
                    })
                }
                Line::Verified => {}
                other => verdict.violations.push(Violation::Unexpected {
                    line: other.to_string(),
                }),
            }
        }
        for key in Key::all() {
            if reported.get(&key) != Some(&1) {
                verdict.violations.push(Violation::Unreported { key });
            }
        }
        verdict
    }

    fn key(&mut self, key: Key) -> &mut KeyHistory {
        self.keys.entry(key).or_default()
    }
}

impl KeyHistory {
    fn acknowledge(&mut self, version: Version) {
        if self.acked.is_some_and(|acked| acked >= version) {
            return;
        }
        self.acked = Some(version);
        // Keep `version` and above: what a record may still hold.
        self.issued = self.issued.split_off(&version);
        self.issued.insert(version);
    }

    /// Judges what a reopen found for `key`: a record's version and
    /// content, or nothing.
    fn check_found(&mut self, key: Key, found: Option<(Version, Found)>, verdict: &mut Verdict) {
        let version = found.map(|(version, _)| version);
        if let Some(acked) = self.acked {
            verdict.acks_checked += 1;
            if version < Some(acked) {
                verdict.lost += 1;
                verdict.violations.push(Violation::Lost {
                    key,
                    acked,
                    found: version,
                });
                return;
            }
        }
        if let Some(seen) = self.seen
            && version < Some(seen)
        {
            verdict.violations.push(Violation::Regressed {
                key,
                seen,
                found: version,
            });
            return;
        }
        let Some((version, content)) = found else {
            return;
        };
        if !self.issued.contains(&version) {
            verdict.violations.push(Violation::Unwritten {
                key,
                found: version,
            });
        } else if !content.is_written_by(key, version) {
            verdict.violations.push(Violation::WrongContent {
                key,
                version,
                found: content,
            });
        } else {
            self.seen = Some(version);
        }
    }
}

impl Verdict {
    /// Adds another reopen's verdict to this one.
    pub fn add(&mut self, other: Verdict) {
        self.acks_checked += other.acks_checked;
        self.lost += other.lost;
        self.crc_errors += other.crc_errors;
        self.header_errors += other.header_errors;
        self.acks_behind_corrupt += other.acks_behind_corrupt;
        self.violations.extend(other.violations);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, Shape};

    const K: Key = Key {
        writer: 2,
        index: 5,
    };

    fn v(run: u64, seq: u64) -> Version {
        protocol::version(run, K, seq)
    }

    fn start(version: Version) -> Line {
        Line::Start { key: K, version }
    }

    fn ack(version: Version) -> Line {
        Line::Ack {
            key: K,
            version,
            stale: None,
        }
    }

    /// What a reopen prints for K holding what `version` wrote, every
    /// other key absent (as the verifier reports it).
    fn reopen_with(k: Option<(Version, Found)>) -> Vec<Line> {
        let mut lines: Vec<Line> = Key::all()
            .map(|key| match k {
                Some((version, found)) if key == K => Line::Record {
                    key,
                    version,
                    found,
                },
                _ => Line::Absent { key },
            })
            .collect();
        lines.push(Line::Verified);
        lines
    }

    /// K holding exactly what the write of `version` stored.
    fn holding(version: Version) -> Vec<Line> {
        let found = Found::of(K, version, protocol::value_of(K, version).as_deref());
        reopen_with(Some((version, found)))
    }

    fn written(lines: &[Line]) -> History {
        let mut history = History::default();
        let (_, violations) = history.record(lines);
        assert_eq!(violations, vec![]);
        history
    }

    #[test]
    fn the_acknowledged_write_or_a_newer_one_passes() {
        let lines = [start(v(1, 1)), ack(v(1, 1)), start(v(1, 2))];
        let mut history = written(&lines);
        let verdict = history.check(&holding(v(1, 1)));
        assert_eq!((verdict.acks_checked, verdict.violations), (1, vec![]));
        // The newer write was started, never acknowledged, and landed.
        let verdict = history.check(&holding(v(1, 2)));
        assert_eq!((verdict.acks_checked, verdict.violations), (1, vec![]));
    }

    #[test]
    fn an_acknowledged_write_found_older_or_absent_is_a_loss() {
        let lines = [start(v(1, 1)), ack(v(1, 1)), start(v(1, 2)), ack(v(1, 2))];
        let mut history = written(&lines);
        let verdict = history.check(&holding(v(1, 1)));
        assert_eq!(verdict.lost, 1);
        assert_eq!(
            verdict.violations,
            vec![Violation::Lost {
                key: K,
                acked: v(1, 2),
                found: Some(v(1, 1)),
            }]
        );
        let verdict = history.check(&reopen_with(None));
        assert_eq!(verdict.lost, 1, "{:?}", verdict.violations);
    }

    #[test]
    fn a_version_nobody_wrote_or_content_it_did_not_write_is_a_violation() {
        let mut history = written(&[start(v(1, 1)), ack(v(1, 1))]);
        let verdict = history.check(&holding(v(1, 7)));
        assert_eq!(
            verdict.violations,
            vec![Violation::Unwritten {
                key: K,
                found: v(1, 7)
            }]
        );
        let damaged = Found::Value {
            len: 3,
            intact: false,
        };
        let verdict = history.check(&reopen_with(Some((v(1, 1), damaged))));
        assert_wrong_content(&verdict);
        // The right bytes at the wrong shape: a tombstone where a put was.
        let put = (1..)
            .map(|seq| v(2, seq))
            .find(|&version| matches!(protocol::shape_of(K, version), Shape::Value { .. }));
        let put = put.unwrap();
        let mut history = written(&[start(put)]);
        let verdict = history.check(&reopen_with(Some((put, Found::Tombstone))));
        assert_wrong_content(&verdict);
    }

    fn assert_wrong_content(verdict: &Verdict) {
        assert!(
            matches!(verdict.violations[..], [Violation::WrongContent { .. }]),
            "{:?}",
            verdict.violations
        );
    }

    #[test]
    fn data_read_back_once_must_not_go_back_in_time() {
        // Written, never acknowledged (killed first), but read back.
        let mut history = written(&[start(v(1, 1)), start(v(1, 2))]);
        assert_eq!(history.check(&holding(v(1, 2))).violations, vec![]);
        let verdict = history.check(&holding(v(1, 1)));
        assert_eq!(
            verdict.violations,
            vec![Violation::Regressed {
                key: K,
                seen: v(1, 2),
                found: Some(v(1, 1)),
            }]
        );
        assert_eq!(verdict.lost, 0, "nothing was acknowledged");
    }

    #[test]
    fn corrupt_records_are_counted_not_judged() {
        let mut history = written(&[start(v(1, 1)), ack(v(1, 1))]);
        let mut lines = reopen_with(None);
        lines[0] = Line::Corrupt {
            key: Key::all().next().unwrap(),
            crc: true,
            error: "crc".into(),
        };
        let at = lines
            .iter()
            .position(|l| matches!(l, Line::Absent { key } if *key == K))
            .unwrap();
        lines[at] = Line::Corrupt {
            key: K,
            crc: false,
            error: "format 9".into(),
        };
        let verdict = history.check(&lines);
        assert_eq!(
            (
                verdict.crc_errors,
                verdict.header_errors,
                verdict.acks_behind_corrupt,
                verdict.lost
            ),
            (1, 1, 1, 0)
        );
        assert_eq!(verdict.violations, vec![]);
    }

    #[test]
    fn a_stale_ack_a_stray_key_and_a_missing_report_are_violations() {
        let mut history = History::default();
        let (counts, violations) = history.record(&[
            start(v(1, 1)),
            Line::Ack {
                key: K,
                version: v(1, 1),
                stale: Some(v(9, 9)),
            },
            Line::Failed {
                key: K,
                version: v(1, 2),
                error: "flush".into(),
            },
        ]);
        assert_eq!(counts, RunCounts { acks: 1, failed: 1 });
        assert!(matches!(violations[..], [Violation::StaleAck { .. }]));
        let mut lines = holding(v(1, 1));
        lines.retain(|l| !matches!(l, Line::Absent { key } if key.index == 0));
        lines.push(Line::Stray {
            partition: 3,
            key: "junk".into(),
        });
        let verdict = history.check(&lines);
        let unreported = verdict
            .violations
            .iter()
            .filter(|v| matches!(v, Violation::Unreported { .. }))
            .count();
        assert_eq!(unreported, protocol::WRITERS as usize);
        assert!(
            verdict
                .violations
                .iter()
                .any(|v| matches!(v, Violation::Stray { .. }))
        );
    }
}
