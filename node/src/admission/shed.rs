//! The admission decision: from the counters a request arrives to, whether
//! it runs now, waits briefly, or is refused.
//!
//! [`decide`] is pure; the controller that applies it to every request is
//! [`Admission`](super::Admission) (`controller.rs`).

use crate::metrics::ShedReason;
use crate::proto::op::Class;

/// What the controller sees when a request arrives.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// The request's class.
    pub class: Class,
    /// Foreground requests executing.
    pub foreground: usize,
    /// Background requests executing.
    pub background: usize,
    /// Foreground requests waiting.
    pub queued: usize,
    /// The current foreground limit.
    pub limit: usize,
    /// The wait queue's capacity.
    pub queue_len: usize,
    /// Request bytes held, not counting this request.
    pub bytes: u64,
    /// This request's bytes.
    pub request_bytes: u64,
    /// The bytes cap.
    pub max_bytes: u64,
    /// See [`AdmissionConfig::background_share`](super::AdmissionConfig::background_share).
    pub background_share: f64,
    /// The request is part of one another node already admitted (a
    /// coordinator's replica write or read): see [`decide`].
    pub in_progress: bool,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run it now.
    Admit,
    /// Let it wait for a foreground slot.
    Queue,
    /// Refuse it with `Overloaded`.
    Refuse(ShedReason),
    /// Control: run it under the control budget, never refused.
    Control,
}

/// The admission decision for one request, from the counters alone.
pub fn decide(s: &Snapshot) -> Decision {
    if s.class == Class::Control {
        return Decision::Control;
    }
    // One request alone may always run, however large: the frame limit
    // already bounds it.
    if s.bytes > 0 && s.bytes.saturating_add(s.request_bytes) > s.max_bytes {
        return Decision::Refuse(ShedReason::Bytes);
    }
    match s.class {
        Class::Background => {
            let room = (s.limit as f64 * s.background_share).floor() as usize;
            if s.foreground + s.queued + s.background < room {
                Decision::Admit
            } else {
                Decision::Refuse(ShedReason::Background)
            }
        }
        // Work another node already admitted and is waiting on: refusing
        // it wastes what that node spent, fails a request it accepted,
        // and invites a retry, so it runs past the limit, into the room
        // the queue would take, and is refused only beyond that. It never
        // queues: a coordinator's answer should not wait behind new work.
        Class::Foreground if s.in_progress => {
            if s.foreground < s.limit.saturating_add(s.queue_len) {
                Decision::Admit
            } else {
                Decision::Refuse(ShedReason::QueueFull)
            }
        }
        _ if s.foreground < s.limit => Decision::Admit,
        _ if s.queued < s.queue_len => Decision::Queue,
        _ => Decision::Refuse(ShedReason::QueueFull),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(class: Class) -> Snapshot {
        Snapshot {
            class,
            foreground: 0,
            background: 0,
            queued: 0,
            limit: 8,
            queue_len: 4,
            bytes: 0,
            request_bytes: 100,
            max_bytes: 1000,
            background_share: 0.5,
            in_progress: false,
        }
    }

    #[test]
    fn foreground_is_admitted_then_queued_then_refused() {
        let mut s = snapshot(Class::Foreground);
        assert_eq!(decide(&s), Decision::Admit);
        s.foreground = 8;
        assert_eq!(decide(&s), Decision::Queue);
        s.queued = 4;
        assert_eq!(decide(&s), Decision::Refuse(ShedReason::QueueFull));
    }

    #[test]
    fn work_another_node_admitted_runs_past_the_limit_but_never_queues() {
        let at_limit = Snapshot {
            foreground: 8,
            in_progress: true,
            ..snapshot(Class::Foreground)
        };
        assert_eq!(decide(&at_limit), Decision::Admit);
        // New client work at the same point waits instead.
        let new_work = Snapshot {
            in_progress: false,
            ..at_limit
        };
        assert_eq!(decide(&new_work), Decision::Queue);
        // Past the limit plus the queue's room, even it is refused.
        let far_past = Snapshot {
            foreground: 12,
            ..at_limit
        };
        assert_eq!(decide(&far_past), Decision::Refuse(ShedReason::QueueFull));
    }

    #[test]
    fn control_is_never_refused() {
        let mut s = snapshot(Class::Control);
        s.foreground = 1000;
        s.queued = 1000;
        s.bytes = u64::MAX / 2;
        assert_eq!(decide(&s), Decision::Control);
    }

    #[test]
    fn background_gets_only_what_foreground_leaves() {
        let mut s = snapshot(Class::Background);
        assert_eq!(decide(&s), Decision::Admit);
        s.foreground = 4;
        assert_eq!(decide(&s), Decision::Refuse(ShedReason::Background));
        s.foreground = 2;
        s.queued = 2;
        assert_eq!(decide(&s), Decision::Refuse(ShedReason::Background));
    }

    #[test]
    fn bytes_past_the_cap_are_refused_but_a_lone_request_runs() {
        let mut s = snapshot(Class::Foreground);
        s.bytes = 950;
        assert_eq!(decide(&s), Decision::Refuse(ShedReason::Bytes));
        s.bytes = 0;
        s.request_bytes = 5000;
        assert_eq!(decide(&s), Decision::Admit);
    }
}
