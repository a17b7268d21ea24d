//! The runtime's modules form a straight line of layers (ARCHITECTURE.md):
//! each may use the layers before it and never one after it, and inside one
//! top-level module the files form no import cycle. Read from the
//! `crate::` and `super::` paths of every non-test source file; fails with
//! the offending file and path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, by layer (earlier layers first). A module may use
/// modules of earlier layers only.
const LAYERS: &[&[&str]] = &[
    &["sync", "error"],
    &[
        "key", "entry", "codec", "stats", "control", "breaker", "flight", "local",
    ],
    &["schema"],
    &["coherence"],
    &["backend"],
    &["cache"],
    &["global"],
    &["__private"],
];

fn layer(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// Source files that are test code only (declared `#[cfg(test)] mod`).
fn is_test_file(p: &Path) -> bool {
    matches!(
        p.file_name().and_then(|n| n.to_str()),
        Some("tests.rs" | "proptests.rs" | "strategies.rs")
    )
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && !is_test_file(&p) {
            out.push(p);
        }
    }
}

/// The module path of a file: `cache/lookup.rs` -> ["cache", "lookup"].
fn module_of(src: &Path, p: &Path) -> Vec<String> {
    let rel = p.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The file's code before its `#[cfg(test)]` module (tests come last).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        // Doc comments and comments name modules too; they are not uses.
        let code = line.split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every module a file's paths name, resolved against `here`: the first
/// segments after `crate::`, or after `super::` (one level up per `super`).
fn uses(here: &[String], text: &str) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    let bytes: Vec<char> = text.chars().collect();
    let word = |i: usize| -> (String, usize) {
        let mut j = i;
        let mut w = String::new();
        while j < bytes.len() && (bytes[j].is_alphanumeric() || bytes[j] == '_') {
            w.push(bytes[j]);
            j += 1;
        }
        (w, j)
    };
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        if !boundary {
            i += 1;
            continue;
        }
        let (w, j) = word(i);
        if w == "crate" || w == "super" {
            // `super` from `a/b.rs` (module a::b) is `a`; from `a/mod.rs`
            // (module a) it is the crate root.
            let mut base: Vec<String> = if w == "crate" {
                vec![]
            } else {
                let mut b = here.to_vec();
                b.pop();
                b
            };
            let mut k = j;
            let mut path = vec![];
            loop {
                if bytes.get(k) == Some(&':') && bytes.get(k + 1) == Some(&':') {
                    let (seg, next) = word(k + 2);
                    if seg.is_empty() {
                        break;
                    }
                    if seg == "super" && path.is_empty() {
                        base.pop();
                    } else {
                        path.push(seg);
                    }
                    k = next;
                } else {
                    break;
                }
            }
            if !path.is_empty() {
                base.extend(path);
                out.insert(base);
            }
            i = k;
        } else {
            i = j.max(i + 1);
        }
    }
    out
}

#[test]
fn modules_are_a_straight_line_of_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = vec![];
    files(&src, &mut all);
    let modules: BTreeSet<Vec<String>> = all.iter().map(|p| module_of(&src, p)).collect();
    let mut problems = vec![];
    // Edges between files of one top-level module, for the cycle check.
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for p in &all {
        let here = module_of(&src, p);
        let Some(top) = here.first() else { continue }; // lib.rs
        let Some(own) = layer(top) else {
            problems.push(format!(
                "{}: module `{top}` is in no layer of this test",
                p.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(p).expect("read");
        for used in uses(&here, &code(&text)) {
            // The longest prefix that is a module file.
            let Some(target) = (1..=used.len())
                .rev()
                .map(|n| used[..n].to_vec())
                .find(|m| modules.contains(m))
            else {
                continue;
            };
            let target_top = &target[0];
            if target_top == top {
                if target != here && !here.starts_with(&target) && !target.starts_with(&here) {
                    edges.entry(here.clone()).or_default().insert(target);
                }
                continue;
            }
            let Some(theirs) = layer(target_top) else {
                continue;
            };
            if theirs >= own {
                problems.push(format!(
                    "{}: uses `{}` (layer {theirs}), but `{top}` is in layer {own}",
                    p.strip_prefix(&src).unwrap_or(p).display(),
                    target.join("::"),
                ));
            }
        }
    }
    // No cycle among the files of one top-level module.
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        problems: &mut Vec<String>,
    ) {
        if done.contains(n) {
            return;
        }
        if let Some(at) = stack.iter().position(|s| s == n) {
            let cycle: Vec<String> = stack[at..].iter().map(|m| m.join("::")).collect();
            problems.push(format!(
                "import cycle: {} -> {}",
                cycle.join(" -> "),
                n.join("::")
            ));
            return;
        }
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            visit(m, edges, stack, done, problems);
        }
        stack.pop();
        done.insert(n.clone());
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        visit(n, &edges, &mut vec![], &mut done, &mut problems);
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_uses() {
    let here = vec!["cache".to_string(), "lookup".to_string()];
    let found = uses(
        &here,
        "use super::options::Filter;\nuse crate::backend::{Backend, Expect};\nlet x = crate::entry::token();",
    );
    let want: BTreeSet<Vec<String>> = [
        vec!["cache", "options", "Filter"],
        vec!["backend"],
        vec!["entry", "token"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    assert_eq!(found, want);
}
