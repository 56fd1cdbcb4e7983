//! Rules of the code base that are written down, checked as tests (rust-analyzer's tidy tests): each names the file
//! that breaks it and what to do.

use std::path::{Path, PathBuf};

use super::project_root;

/// The library's source files, relative to the root, with their text.
fn library_sources() -> Vec<(PathBuf, String)> {
    let root = project_root();
    walkdir::WalkDir::new(root.join("src"))
        .into_iter()
        .map(|e| e.expect("walk src"))
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).expect("read a source file");
            (e.path().strip_prefix(&root).expect("under the root").to_path_buf(), text)
        })
        .collect()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(project_root().join(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

#[test]
fn every_library_file_starts_with_its_module_doc() {
    let missing: Vec<PathBuf> =
        library_sources().into_iter().filter(|(_, text)| !text.starts_with("//!")).map(|(path, _)| path).collect();
    assert!(missing.is_empty(), "start these files with a `//!` line saying what the module is for: {missing:?}");
}

#[test]
fn unsafe_code_is_allowed_only_in_the_interposer_the_sampler_and_the_platform_primitives() {
    let allowed = [
        Path::new("src/capture/intercept/mod.rs"),
        Path::new("src/capture/sampler/mod.rs"),
        Path::new("src/sys/mod.rs"),
    ];
    let elsewhere: Vec<PathBuf> = library_sources()
        .into_iter()
        .filter(|(path, text)| text.contains("allow(unsafe_code)") && !allowed.contains(&path.as_path()))
        .map(|(path, _)| path)
        .collect();
    assert!(
        elsewhere.is_empty(),
        "`unsafe` belongs in the interposer, the sampler or the platform primitives (`src/sys/`): {elsewhere:?}"
    );
    assert!(read("src/lib.rs").contains("#![deny(unsafe_code)]"), "src/lib.rs must deny unsafe code");
}

#[test]
fn the_crate_docs_list_every_cargo_feature() {
    let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml is TOML");
    let mut features: Vec<&str> =
        manifest["features"].as_table().expect("[features]").keys().map(String::as_str).collect();
    features.retain(|f| *f != "default");
    features.sort_unstable();
    let lib = read("src/lib.rs");
    let mut listed: Vec<&str> = lib
        .lines()
        .skip_while(|l| *l != "//! ## Feature flags")
        .filter_map(|l| l.strip_prefix("//! - `")?.split('`').next())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, features, "src/lib.rs's `## Feature flags` list and Cargo.toml's [features] differ");
}

#[test]
fn the_readme_configuration_table_lists_every_variable() {
    let mut variables: Vec<String> = library_sources()
        .iter()
        .flat_map(|(_, text)| text.match_indices('"').map(move |(i, _)| &text[i + 1..]))
        .filter_map(|rest| {
            let name: String = rest.chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
            let is_variable = name.starts_with("BLOCKCOP_") || name == "RUST_TEST_BLOCKCOP";
            (is_variable && rest[name.len()..].starts_with('"')).then_some(name)
        })
        .collect();
    variables.sort_unstable();
    variables.dedup();
    assert!(variables.len() >= 8, "found too few variables to trust the scan: {variables:?}");
    let readme = read("README.md");
    let table: String = readme
        .lines()
        .skip_while(|l| *l != "## Configuration")
        .take_while(|l| !l.starts_with("One rule"))
        .filter(|l| l.starts_with("| `"))
        .collect::<Vec<_>>()
        .join("\n");
    let missing: Vec<&String> = variables.iter().filter(|v| !table.contains(&format!("| `{v}` |"))).collect();
    assert!(missing.is_empty(), "README's configuration table has no row for {missing:?}");
}

/// The library's layers, lowest first. A module imports only from its own layer or a lower one, so the model knows
/// nothing of how violations are captured, capture nothing of the entry points, and nothing below the outputs
/// knows how violations are reported. A module is a file or folder directly under `src/` (`lib.rs`, the facade
/// that re-exports the public items, and `bin/` are outside the layers).
const LAYERS: &[(&str, &[&str])] = &[
    ("platform primitives", &["sys"]),
    ("model", &["catalogue", "clock", "violation", "call_site", "workspace", "config", "record", "recent", "header"]),
    ("capture", &["capture"]),
    ("entry points", &["instrument", "runtime", "layer", "start"]),
    ("outputs", &["report", "testing", "test"]),
];

/// The module a source file belongs to: its first path component under `src/`, without `.rs`.
fn top_module(path: &Path) -> Option<String> {
    let rest = path.strip_prefix("src").ok()?;
    let first = rest.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "bin").then(|| name.to_owned())
}

/// The text of a file without comments and without its `#[cfg(test)] mod tests` block (tests may reach anywhere).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every path `text` names after `crate::`, with `use crate::{a, b::{c, d}}` groups expanded: `a`, `b::c`, `b::d`.
fn crate_paths(text: &str) -> Vec<String> {
    fn expand(prefix: &str, rest: &str, out: &mut Vec<String>) {
        let head_len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        let (head, after) = rest.split_at(head_len);
        if after.starts_with('{') && (head.is_empty() || head.ends_with("::")) {
            let mut depth = 0;
            let mut start = 1;
            for (i, c) in after.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        let part = after[start..i].trim();
                        if !part.is_empty() {
                            expand(&format!("{prefix}{head}"), part, out);
                        }
                        start = i + 1;
                        if c == '}' {
                            return;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
        } else {
            out.push(format!("{prefix}{head}"));
        }
    }
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` in a macro, or a crate named `…crate`
        }
        expand("", &text[i + "crate::".len()..], &mut out);
    }
    out
}

/// The modules each name that `lib.rs` re-exports or defines comes from (`crate::Violation` is `violation`'s;
/// `crate::allow_blocking`, defined in `lib.rs`, is the modules its body calls).
fn root_items(lib: &str, modules: &[String]) -> std::collections::HashMap<String, Vec<String>> {
    let mut items: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    let code = code_of(lib);
    for stmt in code.split(';') {
        let Some(at) = stmt.find("pub use ") else { continue };
        let used = &stmt[at + "pub use ".len()..];
        for path in crate_paths(&format!("crate::{}", used.strip_prefix("crate::").unwrap_or(used))) {
            let mut parts = path.split("::");
            let module = parts.next().unwrap_or("").to_owned();
            let last = path.rsplit("::").next().unwrap_or("");
            let name = last.rsplit(" as ").next().unwrap_or(last).trim().to_owned();
            items.entry(name).or_default().push(module);
        }
    }
    for (i, _) in code.match_indices("pub fn ") {
        let rest = &code[i + "pub fn ".len()..];
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let body = rest.split("\n}\n").next().unwrap_or(rest);
        let used: Vec<String> = modules
            .iter()
            .filter(|m| body.contains(&format!("{m}::")) || body.contains(&format!("crate::{m}::")))
            .cloned()
            .collect();
        items.entry(name).or_default().extend(used);
    }
    items
}

/// The imports between the library's modules: (importer, imported) → the first file and path that shows it.
fn module_imports() -> std::collections::BTreeMap<(String, String), (PathBuf, String)> {
    let sources = library_sources();
    let mut modules: Vec<String> = sources.iter().filter_map(|(path, _)| top_module(path)).collect();
    modules.sort_unstable();
    modules.dedup();
    let roots = root_items(&read("src/lib.rs"), &modules);
    let mut edges = std::collections::BTreeMap::new();
    for (path, text) in &sources {
        let Some(from) = top_module(path) else { continue };
        for used in crate_paths(&code_of(text)) {
            let first = used.split("::").next().unwrap_or("");
            let targets = if modules.iter().any(|m| m == first) {
                vec![first.to_owned()]
            } else {
                roots.get(first).cloned().unwrap_or_default()
            };
            for to in targets {
                if to != from {
                    edges.entry((from.clone(), to)).or_insert_with(|| (path.clone(), format!("crate::{used}")));
                }
            }
        }
    }
    edges
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

#[test]
fn every_module_has_a_layer() {
    let mut modules: Vec<String> = library_sources().iter().filter_map(|(path, _)| top_module(path)).collect();
    modules.sort_unstable();
    modules.dedup();
    let missing: Vec<&String> = modules.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(missing.is_empty(), "add these modules to a layer in LAYERS (xtask/src/tidy.rs): {missing:?}");
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let upward: Vec<String> = module_imports()
        .into_iter()
        .filter_map(|((from, to), (path, used))| {
            let (a, b) = (layer_of(&from)?, layer_of(&to)?);
            (b > a).then(|| {
                format!(
                    "{} uses {used}: {from} ({}) must not import {to} ({})",
                    path.display(),
                    LAYERS[a].0,
                    LAYERS[b].0
                )
            })
        })
        .collect();
    assert!(
        upward.is_empty(),
        "imports go down the layers only (model ← capture ← entry points ← outputs); move the code, or hand it \
         over through a callback the lower layer registers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_modules_import_each_other_in_no_cycle() {
    let edges = module_imports();
    let mut graph: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
    }
    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit<'a>(
        m: &'a str,
        graph: &std::collections::BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m);
            return Some(cycle);
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            let shown: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} → {} ({})", w[0], w[1], edges[&(w[0].to_owned(), w[1].to_owned())].0.display()))
                .collect();
            panic!("the library's modules import each other in a loop:\n{}", shown.join("\n"));
        }
    }
}

#[test]
fn ci_runs_what_cargo_xtask_ci_runs() {
    let script = read(".ci/run");
    let commands: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with("echo") && l.contains("cargo "))
        // Checking that cargo, rustfmt and clippy are installed runs nothing of the project.
        .filter(|l| !l.contains("--version") && !l.contains("command -v cargo"))
        .collect();
    assert_eq!(
        commands,
        ["exec cargo xtask ci"],
        ".ci/run must hand the steps to `cargo xtask ci` (xtask/src/main.rs), so that the two cannot drift apart"
    );
}
