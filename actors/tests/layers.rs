//! The crate's layers, checked: every `crate::` path in a source file (comments aside) names
//! a module of its own layer or of a layer below. The layers, bottom to top, are `flow`,
//! `backend`, `policy`, `observe`, `actor`, then `broker`, which wires them; `lib.rs` only
//! declares them and re-exports their public types. See the crate's `//!` architecture
//! section.

use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first: a file may import its own layer and those before it.
const LAYERS: [&str; 6] = ["flow", "backend", "policy", "observe", "actor", "broker"];

/// A layer's rank in [`LAYERS`].
fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// Every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layers a line of code names through `crate::` paths.
fn imported_layers(code: &str) -> Vec<&str> {
    code.match_indices("crate::")
        .filter(|(at, _)| !code[..*at].ends_with('$'))
        .map(|(at, m)| {
            let rest = &code[at + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn imports_go_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.iter().next().unwrap().to_str().unwrap();
        let layer = first.trim_end_matches(".rs");
        if layer == "lib" {
            continue;
        }
        let own = rank(layer).unwrap_or_else(|| panic!("{relative:?} is in no layer"));
        for (n, line) in fs::read_to_string(file).unwrap().lines().enumerate() {
            let code = line.split("//").next().unwrap();
            for imported in imported_layers(code) {
                // Root items (`crate::MAILBOX_CAPACITY`, the re-exported types) are not layers.
                let Some(theirs) = rank(imported) else {
                    continue;
                };
                if theirs > own {
                    wrong.push(format!("{}:{}: {}", relative.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports going up a layer:\n{}",
        wrong.join("\n")
    );
}
