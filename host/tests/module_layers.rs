//! The modules of `host/src` form layers that only point down
//! (`docs/design.md`): a module may use the ones below it, never one
//! above. This test reads every source file, collects which top-level
//! module names which (`crate::NAME`), and fails on an edge that points up
//! — unless it is one of the known ones that the layering work has still
//! to remove. The known list may only shrink: an entry that no longer
//! exists fails too, so it is struck off when its edge goes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module's layer, bottom first. A new module gets a place here.
const LAYERS: &[(&str, u32)] = &[
    ("model", 0),
    ("egress", 0),
    ("bindings", 0),
    ("builtin", 0),
    ("config", 1),
    ("grant", 2),
    ("metrics", 2),
    ("store", 3),
    ("auth", 4),
    ("capabilities", 4),
    ("wasm", 5),
    ("workflow", 8),
    ("timers", 9),
    ("delivery", 10),
    ("api", 11),
    ("daemon", 12),
    ("cli", 13),
    ("scaffold", 13),
];

/// Edges that point up today, each still to be removed.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules each top-level module names.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let first = relative.components().next().unwrap();
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = strip_comments(&std::fs::read_to_string(&path).unwrap());
            let mut named = BTreeSet::new();
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    // `use crate::{a, b::c}`: each path's first segment.
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    for item in group.split(',') {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        named.insert(name);
                    }
                } else {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    // `crate::some_macro!`: exported macros live at the
                    // crate root, not in a module.
                    if !rest[name.len()..].starts_with('!') {
                        named.insert(name);
                    }
                }
            }
            named.retain(|n| {
                !n.is_empty() && *n != module && n.chars().next().unwrap().is_lowercase()
            });
            edges.entry(module).or_default().extend(named);
        }
    }
    edges
}

#[test]
fn modules_only_use_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let edges = edges(&src);
    let mut upward = BTreeSet::new();
    for (from, tos) in &edges {
        let Some(&from_layer) = layer.get(from.as_str()) else {
            panic!("module {from} has no layer in LAYERS: give it one");
        };
        for to in tos {
            let Some(&to_layer) = layer.get(to.as_str()) else {
                panic!("{from} names crate::{to}, which has no layer in LAYERS");
            };
            if to_layer > from_layer
                || (to_layer == from_layer && edges.get(to).is_some_and(|t| t.contains(from)))
            {
                upward.insert((from.clone(), to.clone()));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_UPWARD
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    let new: Vec<_> = upward.difference(&known).collect();
    assert!(
        new.is_empty(),
        "these modules now use a layer above them (or each other): {new:?}"
    );
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(
        gone.is_empty(),
        "these edges are gone: strike them off KNOWN_UPWARD: {gone:?}"
    );
}
