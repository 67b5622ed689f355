//! Named places where tests break a node on purpose (the `fail` crate, as
//! TiKV does). Compiled in only with the `failpoints` feature, which the
//! workspace's tests enable; in a normal build every check is a constant
//! `false` and costs nothing.
//!
//! A failpoint is configured by name, in process with `fail::cfg` or for a
//! whole process with the `FAILPOINTS` environment variable read at
//! startup (`FAILPOINTS="storage-apply-before=return(k1);server-handler-panic=1*return"`).
//! The fail crate's own actions (`panic`, `sleep(ms)`, `delay(ms)`,
//! `pause`, `N*…`, `P%…`) work as documented there. `return` makes the
//! place fail its own way (an error, or a panic for the handler), for
//! every request; `return(ARG)` only for the requests ARG names: a key
//! (as UTF-8) for the key places, a partition number for the transfer
//! page, a shard number for the group-commit flush. That keeps one broken
//! key from breaking a test's other requests. A count (`N*return(X)`)
//! is spent by every evaluation that reaches the action, whatever X, so
//! combine counts with an argument only where nothing else passes by.

/// Before a record is written: the write fails with
/// `StorageError::Injected` and nothing is stored. ARG: the key.
pub const STORAGE_APPLY_BEFORE: &str = "storage-apply-before";

/// After a record is written, before the write returns: the write is
/// stored (and flushed as usual) but reported failed, as if the node had
/// died right after it. ARG: the key.
pub const STORAGE_APPLY_AFTER: &str = "storage-apply-after";

/// A record is written damaged: its value's last byte flipped, so its
/// crc fails when it is next read (disk rot). ARG: the key. Combine with a
/// count (`1*return(k)`): the repair of the record passes here too.
pub const STORAGE_DAMAGE: &str = "storage-damage";

/// The group-commit flush: every writer of the batch gets a flush error.
/// ARG: the shard number.
pub const GROUP_COMMIT_FLUSH: &str = "storage-group-commit-flush";

/// Before the flusher flushes the hints: `pause`, `sleep(ms)` or
/// `delay(ms)` hold it there (a `return` does nothing). No ARG.
pub const HINTS_FLUSH: &str = "storage-hints-flush";

/// Inside a request's handler, before it runs: the handler panics (the
/// query of death). ARG: the key.
pub const HANDLER_PANIC: &str = "server-handler-panic";

/// Inside a request's handler, before it runs: the process aborts (a
/// crash no handler can catch: a stack overflow, a panic while
/// panicking). ARG: the key.
pub const HANDLER_ABORT: &str = "server-handler-abort";

/// A transfer page, on the node serving it: the page is refused with an
/// error and nothing is sent. ARG: the partition.
pub const TRANSFER_PAGE: &str = "recovery-transfer-page";

/// Whether failpoint `name` fires for `arg` (the key, partition or shard
/// as bytes): configured `return` fires for everything, `return(X)` only
/// when X equals `arg`.
#[cfg(feature = "failpoints")]
pub fn fires(name: &str, arg: &[u8]) -> bool {
    fail::fail_point!(name, |configured: Option<String>| {
        configured.is_none_or(|c| c.is_empty() || c.as_bytes() == arg)
    });
    false
}

/// Whether failpoint `name` fires for `arg`: never, in a build without the
/// `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn fires(_name: &str, _arg: &[u8]) -> bool {
    false
}

/// Evaluates failpoint `name` for what its action does on the way (a
/// `pause`, `sleep` or `delay` holds the thread here); a `return` does
/// nothing.
#[cfg(feature = "failpoints")]
pub fn hold(name: &str) {
    fail::fail_point!(name, |_| ());
}

/// Evaluates failpoint `name`: nothing, in a build without the
/// `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hold(_name: &str) {}

/// [`fires`] for a numbered thing (a partition, a shard), formatted only
/// in a build with failpoints.
#[inline(always)]
pub fn fires_at(name: &str, number: u64) -> bool {
    cfg!(feature = "failpoints") && fires(name, number.to_string().as_bytes())
}

/// Reads `FAILPOINTS` from the environment and configures it for the
/// process's life (the binary calls it first thing). Without the feature,
/// a set `FAILPOINTS` is reported, not silently ignored.
pub fn setup_from_env() {
    #[cfg(feature = "failpoints")]
    {
        // Leaked on purpose: the configuration lives as long as the process.
        std::mem::forget(fail::FailScenario::setup());
    }
    #[cfg(not(feature = "failpoints"))]
    if std::env::var_os("FAILPOINTS").is_some() {
        eprintln!(
            "levee-node: FAILPOINTS is set but this build has no failpoints \
             (build with --features levee-node/failpoints); ignoring it"
        );
    }
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;

    #[test]
    fn return_fires_for_everything_and_return_arg_only_for_its_arg() {
        // Names of their own: the registry is global to the test process.
        let (all, one) = ("test-fires-all", "test-fires-one");
        assert!(!fires(all, b"k"), "unconfigured");
        fail::cfg(all, "return").unwrap();
        fail::cfg(one, "return(k1)").unwrap();
        assert!(fires(all, b"anything"));
        assert!(fires(one, b"k1"));
        assert!(!fires(one, b"k2"));
        fail::cfg(one, "return(7)").unwrap();
        assert!(fires_at(one, 7));
        assert!(!fires_at(one, 8));
        fail::cfg(one, "1*return(k1)").unwrap();
        assert!(fires(one, b"k1"));
        assert!(!fires(one, b"k1"), "fired its one time");
        fail::cfg(one, "1*return(k1)").unwrap();
        assert!(!fires(one, b"k2"), "not its key…");
        assert!(!fires(one, b"k1"), "…but the count is spent");
        fail::remove(all);
        fail::remove(one);
        assert!(!fires(all, b"anything"));
    }
}
