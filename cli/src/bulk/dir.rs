//! `levee put --from-dir DIR`'s input: every regular file under DIR, each
//! under its path relative to DIR (`DIR/site/a.css` → key `site/a.css`).
//! Symbolic links are not followed (a link out of DIR, or a loop, would
//! store what the operator did not point at); other special files are
//! left out too.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use levee_node::proto::Limits;

use super::Input;

/// The regular files under `root` (paths relative to it, sorted), and a
/// report for each subdirectory that could not be read. `root` itself
/// must be readable.
pub fn walk(root: &Path) -> anyhow::Result<(Vec<PathBuf>, Vec<Input>)> {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let entries = match std::fs::read_dir(root.join(&rel)) {
            Ok(entries) => entries,
            Err(e) if rel.as_os_str().is_empty() => {
                return Err(e).with_context(|| format!("cannot read {}", root.display()));
            }
            Err(e) => {
                unreadable.push(bad(&rel, format!("cannot read the directory: {e}")));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    unreadable.push(bad(&rel, format!("cannot list the directory: {e}")));
                    continue;
                }
            };
            let path = rel.join(entry.file_name());
            // `file_type` does not follow links.
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => files.push(path),
                Ok(_) => {}
                Err(e) => unreadable.push(bad(&path, e.to_string())),
            }
        }
    }
    files.sort();
    Ok((files, unreadable))
}

/// The put for the file at `rel` under `root`: refused before it is read
/// when its size is over the value limit.
pub fn file_input(root: &Path, rel: &Path, limits: &Limits) -> Input {
    let path = root.join(rel);
    let len = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) => return bad(rel, e.to_string()),
    };
    if len > u64::from(limits.max_value_bytes) {
        return Input::Bad {
            what: rel.display().to_string(),
            error: format!(
                "{len} bytes; the limit is {} (max_value_bytes); not stored",
                limits.max_value_bytes
            ),
            too_large: true,
        };
    }
    match std::fs::read(&path) {
        Ok(value) => Input::put(rel.display().to_string(), key_of(rel), value, limits),
        Err(e) => bad(rel, format!("cannot read: {e}")),
    }
}

/// A relative path as a key: its bytes, `/` between components.
pub fn key_of(rel: &Path) -> Vec<u8> {
    rel.as_os_str().as_bytes().to_vec()
}

fn bad(rel: &Path, error: String) -> Input {
    Input::Bad {
        what: rel.display().to_string(),
        error,
        too_large: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_keyed_by_their_path_under_the_directory_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("site/css")).unwrap();
        std::fs::write(root.join("site/index.html"), "<html>").unwrap();
        std::fs::write(root.join("site/css/a.css"), "a{}").unwrap();
        std::fs::write(root.join("top"), "t").unwrap();
        std::os::unix::fs::symlink(root.join("top"), root.join("link")).unwrap();
        let (files, unreadable) = walk(root).unwrap();
        assert!(unreadable.is_empty());
        let keys: Vec<Vec<u8>> = files.iter().map(|f| key_of(f)).collect();
        assert_eq!(
            keys,
            [&b"site/css/a.css"[..], b"site/index.html", b"top"].map(<[u8]>::to_vec)
        );
        let limits = Limits::default();
        assert_eq!(
            file_input(root, Path::new("site/css/a.css"), &limits),
            Input::Put {
                what: "site/css/a.css".into(),
                key: b"site/css/a.css".to_vec(),
                value: b"a{}".to_vec(),
            }
        );
    }

    #[test]
    fn an_oversize_file_is_refused_by_its_size_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), [0u8; 10]).unwrap();
        let limits = Limits {
            max_value_bytes: 9,
            ..Limits::default()
        };
        let Input::Bad {
            error, too_large, ..
        } = file_input(dir.path(), Path::new("big"), &limits)
        else {
            panic!("an oversize file became a put");
        };
        assert!(too_large);
        assert!(error.starts_with("10 bytes; the limit is 9"), "{error}");
    }
}
