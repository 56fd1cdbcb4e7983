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
