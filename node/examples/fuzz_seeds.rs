//! Writes the seed corpus of every fuzz target (see
//! `levee_node::fuzzing::seeds`) under `fuzz/corpus/<target>/`:
//!
//! ```sh
//! cargo run -p levee-node --features fuzzing --example fuzz_seeds [CORPUS_DIR]
//! ```
//!
//! Existing files are kept (a seed of the same name is rewritten), so the
//! corpus the fuzzer grew stays beside the seeds.

use std::path::PathBuf;

use anyhow::Context;
use levee_node::fuzzing::{TARGETS, seeds};

fn main() -> anyhow::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus"));
    let seeds = seeds::seeds()?;
    for (target, _) in TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mine: Vec<_> = seeds.iter().filter(|s| s.target == *target).collect();
        anyhow::ensure!(!mine.is_empty(), "no seed for the target {target}");
        for seed in mine {
            let path = dir.join(&seed.name);
            std::fs::write(&path, &seed.bytes)
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    println!("{} seeds written under {}", seeds.len(), root.display());
    Ok(())
}
