//! Last words: which request a handler was running when the process
//! aborted, so that a crash the node cannot catch still counts against
//! the request's shape.
//!
//! A panic that unwinds is caught and struck by [`super::contain`]. One
//! that does not (a stack overflow, a panic while panicking, an explicit
//! abort, all of which end in `SIGABRT`) kills the process before anything
//! can be proposed to the cluster, and the client, seeing its connection
//! close, sends the same request to the next replica. So each worker
//! thread notes, while it polls a request, that request's shape in a
//! thread-local; a `SIGABRT` handler writes the noted shape of the thread
//! that aborted to a small file in the data directory; and the node, when
//! it starts again, reads the file and reports the shape as a strike, as
//! it would have reported a caught panic.
//!
//! The handler does only what is safe in a signal handler: it reads a
//! constant-initialised thread-local and calls `write(2)` on a file opened
//! beforehand. It runs once (`SA_RESETHAND`), then the abort goes on.
//! A process killed by `SIGKILL` (the OOM killer, an operator) leaves no
//! last words: its requests were not necessarily at fault.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use crate::cluster::quarantine::Shape;
use crate::proto::op::Op;

/// The file in the data directory.
pub const FILE_NAME: &str = "last-words";

const MAGIC: &[u8; 4] = b"LVLW";
/// Magic, the operation's index in [`Op::ALL`], the shape's hash (LE).
const LEN: usize = 4 + 1 + 8;

thread_local! {
    /// The shape (operation index, hash) of the request this thread is
    /// polling, if any.
    static RUNNING: Cell<Option<(u8, u64)>> = const { Cell::new(None) };
}

/// The file the handler writes to, opened before the handler is
/// installed.
static LAST_WORDS: OnceLock<File> = OnceLock::new();

/// Notes that this thread runs a request of `op` and `hash` until the
/// guard is dropped (the previous note, if polls nest, comes back then).
pub fn running(op: Op, hash: u64) -> Running {
    let index = u8::try_from(op.index()).unwrap_or(u8::MAX);
    let previous = RUNNING.with(|r| r.replace(Some((index, hash))));
    Running { previous }
}

/// Restores the thread's previous note when dropped.
#[derive(Debug)]
pub struct Running {
    previous: Option<(u8, u64)>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let previous = self.previous;
        let _ = RUNNING.try_with(|r| r.set(previous));
    }
}

/// The bytes written for a shape.
pub fn encode(op: Op, hash: u64) -> [u8; LEN] {
    encode_raw(u8::try_from(op.index()).unwrap_or(u8::MAX), hash)
}

fn encode_raw(op: u8, hash: u64) -> [u8; LEN] {
    let mut bytes = [0u8; LEN];
    let (magic, rest) = bytes.split_at_mut(MAGIC.len());
    magic.copy_from_slice(MAGIC);
    let (op_byte, hash_bytes) = rest.split_at_mut(1);
    op_byte.copy_from_slice(&[op]);
    hash_bytes.copy_from_slice(&hash.to_le_bytes());
    bytes
}

/// Why a last-words file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LastWordsError {
    /// Not the length of one record.
    #[error("last words of {0} bytes (a record is {LEN})")]
    Length(usize),
    /// Not a record at all.
    #[error("last words without their magic")]
    Magic,
    /// An operation this build does not know.
    #[error("last words name operation {0}, which this build does not have")]
    UnknownOp(u8),
}

/// The shape a file's bytes name: `None` for an empty file (the last run
/// did not abort while running a request).
pub fn decode(bytes: &[u8]) -> Result<Option<Shape>, LastWordsError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let record: &[u8; LEN] = bytes
        .try_into()
        .map_err(|_| LastWordsError::Length(bytes.len()))?;
    let (magic, rest) = record.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(LastWordsError::Magic);
    }
    let (op, hash) = rest.split_at(1);
    let op = op.first().copied().unwrap_or(u8::MAX);
    let known = Op::ALL
        .get(usize::from(op))
        .ok_or(LastWordsError::UnknownOp(op))?;
    let hash = u64::from_le_bytes(hash.try_into().map_err(|_| LastWordsError::Length(LEN))?);
    Ok(Some(Shape {
        op: known.name().to_owned(),
        hash,
    }))
}

/// Reads what the last run left in `dir` (then empties the file), opens
/// it for this run's last words, and installs the `SIGABRT` handler.
/// Returns the last run's shape, if it aborted while running a request.
/// Once per process; a second call only reads.
pub fn install(dir: &Path) -> std::io::Result<Option<Shape>> {
    let path = dir.join(FILE_NAME);
    let left = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let shape = match decode(&left) {
        Ok(shape) => shape,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable last words");
            None
        }
    };
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    if LAST_WORDS.set(file).is_ok() {
        install_handler();
    }
    Ok(shape)
}

#[cfg(unix)]
fn install_handler() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    // On the alternate stack if there is one (a stack overflow aborts
    // from the handler that runs there), and once only: the abort then
    // proceeds with the default action.
    let action = SigAction::new(
        SigHandler::Handler(on_abort),
        SaFlags::SA_ONSTACK | SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    // SAFETY: `on_abort` only reads a constant-initialised, drop-free
    // thread-local and calls write(2) on a file set before the handler
    // is installed; both are async-signal-safe.
    if let Err(e) = unsafe { sigaction(Signal::SIGABRT, &action) } {
        tracing::warn!(error = %e, "cannot install the abort handler; aborts will not be struck");
    }
}

#[cfg(not(unix))]
fn install_handler() {}

extern "C" fn on_abort(_signal: std::ffi::c_int) {
    let Ok(Some((op, hash))) = RUNNING.try_with(Cell::get) else {
        return;
    };
    if let Some(mut file) = LAST_WORDS.get() {
        let _ = file.write(&encode_raw(op, hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_its_shape() {
        let bytes = encode(Op::Put, 0xdead_beef);
        let shape = decode(&bytes).unwrap().expect("a shape");
        assert_eq!(shape.op, "put");
        assert_eq!(shape.hash, 0xdead_beef);
        assert_eq!(decode(&[]), Ok(None));
    }

    #[test]
    fn damaged_records_are_errors() {
        let good = encode(Op::Get, 7);
        assert_eq!(
            decode(good.get(..5).unwrap()),
            Err(LastWordsError::Length(5))
        );
        let mut bad = good;
        bad[0] = b'X';
        assert_eq!(decode(&bad), Err(LastWordsError::Magic));
        let unknown = encode_raw(200, 7);
        assert_eq!(decode(&unknown), Err(LastWordsError::UnknownOp(200)));
    }

    #[test]
    fn the_note_is_the_innermost_request_and_comes_back_when_it_ends() {
        assert_eq!(RUNNING.with(Cell::get), None);
        let outer = running(Op::Put, 1);
        {
            let _inner = running(Op::Get, 2);
            assert_eq!(RUNNING.with(Cell::get), Some((Op::Get.index() as u8, 2)));
        }
        assert_eq!(RUNNING.with(Cell::get), Some((Op::Put.index() as u8, 1)));
        drop(outer);
        assert_eq!(RUNNING.with(Cell::get), None);
    }
}
