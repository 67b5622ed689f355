//! The floors of `levee-node` point only down: every module imports only
//! modules on floors below its own, as listed under "Floors" in
//! ARCHITECTURE.md. A module that reaches up (or sideways, to another
//! module of its own floor), or one the list does not name, fails this
//! test with the file and line that does it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The floor list: module name → floor number (1 is the lowest).
type Floors = BTreeMap<String, usize>;

/// Reads the numbered list under the `## Floors` heading: each item is
/// `N. `a`, `b` — what they are`, and the backticked names before the
/// dash are the modules of floor N.
fn parse_floors(architecture: &str) -> Result<Floors, String> {
    let section = architecture
        .split("\n## ")
        .find(|s| s.starts_with("Floors"))
        .ok_or("ARCHITECTURE.md has no `## Floors` section")?;
    let mut floors = Floors::new();
    for line in section.lines() {
        let Some((number, rest)) = line.split_once(". ") else {
            continue;
        };
        let Ok(floor) = number.trim().parse::<usize>() else {
            continue;
        };
        let names = rest.split(" — ").next().unwrap_or("");
        for name in names.split('`').skip(1).step_by(2) {
            if floors.insert(name.to_string(), floor).is_some() {
                return Err(format!("module `{name}` is listed on two floors"));
            }
        }
    }
    if floors.is_empty() {
        return Err("the Floors section lists no modules".into());
    }
    Ok(floors)
}

/// The top-level module a source file belongs to (`node/src/data/x.rs`
/// → `data`, `node/src/hlc.rs` → `hlc`); `None` for the crate roots.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The modules a line names through `crate::` paths, including the
/// members of a grouped `use crate::{a, b::c}`. Comment lines are skipped
/// (doc links name modules without importing them).
fn crate_paths(line: &str) -> Vec<String> {
    if line.trim_start().starts_with("//") {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            found.extend(first_ident(&item));
        } else {
            found.extend(first_ident(rest));
        }
    }
    found
}

fn first_ident(s: &str) -> Option<String> {
    let ident: String = s
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty()).then_some(ident)
}

/// Every import that breaks the floors, as `file:line: message`.
fn violations(floors: &Floors, files: &[(PathBuf, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in files {
        let Some(module) = module_of(path) else {
            continue;
        };
        let Some(&own) = floors.get(&module) else {
            out.push(format!(
                "{}: module `{module}` is on no floor; add it to the Floors list in ARCHITECTURE.md",
                path.display()
            ));
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for target in crate_paths(line) {
                if target == module {
                    continue;
                }
                match floors.get(&target) {
                    Some(&floor) if floor < own => {}
                    Some(&floor) => out.push(format!(
                        "{}:{}: `{module}` (floor {own}) imports `{target}` (floor {floor}); \
                         a module may import only floors below its own",
                        path.display(),
                        n + 1
                    )),
                    None => out.push(format!(
                        "{}:{}: `{module}` imports `{target}`, which is on no floor",
                        path.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("read source file");
            let relative = path.strip_prefix(root).expect("under root").to_path_buf();
            out.push((relative, text));
        }
    }
}

#[test]
fn node_modules_import_only_floors_below_their_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let floors = parse_floors(&architecture).unwrap_or_else(|e| panic!("{e}"));
    let src = root.join("node/src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let found = violations(&floors, &files);
    assert!(found.is_empty(), "floors broken:\n{}", found.join("\n"));
}

#[test]
fn the_check_catches_an_import_from_above_a_sideways_one_and_an_unlisted_module() {
    let floors = parse_floors(
        "# A\n\n## Floors\n\n1. `hlc`, `partition` — basics\n2. `storage` — disk\n3. `server` — edge\n\n## Next\n\n4. `not_a_floor` — ignored\n",
    )
    .expect("parse");
    assert_eq!(floors.len(), 4);
    assert!(!floors.contains_key("not_a_floor"));
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_string());
    let files = [
        file(
            "storage/engine.rs",
            "use crate::hlc::Clock;\nuse crate::server::Node;\n",
        ),
        file("hlc.rs", "use crate::{partition::partition_of, storage};\n"),
        file(
            "server/mod.rs",
            "use crate::{hlc, storage::{Storage, Version}};\n",
        ),
        file("extra.rs", "use crate::hlc;\n"),
        file("partition.rs", "/// See [`crate::server`].\nfn f() {}\n"),
        file("lib.rs", "pub mod server;\n"),
    ];
    let found = violations(&floors, &files);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("storage/engine.rs:2: `storage` (floor 2) imports `server`"));
    assert!(found[1].starts_with("hlc.rs:1: `hlc` (floor 1) imports `partition` (floor 1)"));
    assert!(found[2].starts_with("hlc.rs:1: `hlc` (floor 1) imports `storage`"));
    assert!(found[3].contains("module `extra` is on no floor"));
}
