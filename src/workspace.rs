//! Where the user's sources are: the workspace root of the crate that was built (call sites inside it are shown
//! relative to it, and the checked-in `blockcop.toml` and baseline are looked for there) and the cargo home
//! (dependencies' sources).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// `$CARGO_HOME`, else `~/.cargo`.
pub(crate) fn cargo_home() -> Option<String> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|p| p.to_string_lossy().into_owned())
}

/// The workspace root of the crate that was built, whatever the working directory: the directory rustc ran in, as
/// the executable's debug info records it (see [`root_from_debug_info`]). Without debug info, the nearest ancestor of
/// the running package's manifest directory (or of the current directory) whose `Cargo.toml` has a `[workspace]`
/// table. Call sites inside it are shown relative to it.
static WORKSPACE_ROOT: LazyLock<Option<PathBuf>> = LazyLock::new(|| root_from_debug_info().or_else(root_from_cwd));

/// The directory cargo ran rustc in for the executable's own code: the `DW_AT_comp_dir` of its compile units. Cargo
/// runs rustc in the workspace root for every local package (registry and git dependencies run in their own
/// directory, std in `/rustc/<hash>`), so the most common directory that holds a `Cargo.toml` and is neither of
/// those is the workspace root. Reads only the compile units' first entries: about 30 ms on a 130 MB debug binary.
/// `None` without debug info (or with compressed debug sections).
pub(crate) fn root_from_debug_info() -> Option<PathBuf> {
    use object::{Object as _, ObjectSection as _};
    let exe = std::env::current_exe().ok()?;
    let file = std::fs::File::open(exe).ok()?;
    let cache = object::ReadCache::new(file);
    let obj = object::File::parse(&cache).ok()?;
    let endian = if obj.is_little_endian() { gimli::RunTimeEndian::Little } else { gimli::RunTimeEndian::Big };
    let section = |name: &str| {
        let data = obj.section_by_name(name).and_then(|s| s.data().ok()).unwrap_or(&[]);
        gimli::EndianSlice::new(data, endian)
    };
    let info = gimli::DebugInfo::from(section(".debug_info"));
    let abbrev = gimli::DebugAbbrev::from(section(".debug_abbrev"));
    let strs = gimli::DebugStr::from(section(".debug_str"));
    let line_strs = gimli::DebugLineStr::from(section(".debug_line_str"));
    let cargo_home = cargo_home().map(PathBuf::from);
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    let mut units = info.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(abbrevs) = header.abbreviations(&abbrev) else { continue };
        let mut entries = header.entries(&abbrevs);
        let Ok(Some(root)) = entries.next_dfs() else { continue };
        let dir = match root.attr_value(gimli::DW_AT_comp_dir) {
            Some(gimli::AttributeValue::String(s)) => s,
            Some(gimli::AttributeValue::DebugStrRef(o)) => strs.get_str(o).unwrap_or_default(),
            Some(gimli::AttributeValue::DebugLineStrRef(o)) => line_strs.get_str(o).unwrap_or_default(),
            _ => continue,
        };
        *counts.entry(dir.slice()).or_default() += 1;
    }
    let mut dirs: Vec<(usize, PathBuf)> = counts
        .into_iter()
        .filter_map(|(dir, n)| Some((n, PathBuf::from(std::str::from_utf8(dir).ok()?))))
        .filter(|(_, dir)| {
            !dir.starts_with("/rustc")
                && !cargo_home
                    .as_ref()
                    .is_some_and(|home| dir.starts_with(home.join("registry")) || dir.starts_with(home.join("git")))
                && !dir.to_string_lossy().contains("/.cargo/registry/")
                && dir.join("Cargo.toml").is_file()
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, dir)| dir)
}

fn root_from_cwd() -> Option<PathBuf> {
    let start = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).or_else(|| std::env::current_dir().ok())?;
    let is_workspace = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
    };
    start
        .ancestors()
        .find(|d| is_workspace(d))
        .or_else(|| start.ancestors().find(|d| d.join("Cargo.toml").is_file()))
        .map(Path::to_path_buf)
}

/// The workspace root call sites are shown relative to, if one was found.
pub(crate) fn root() -> Option<&'static Path> {
    WORKSPACE_ROOT.as_deref()
}
