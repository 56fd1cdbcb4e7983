//! The catalogue of blocking events: one table of categories, their weight and the libc functions in each; the
//! weights (aiocop's scale) and the levels a severity maps to.
//!
//! Adding an event means adding its function name here and a hook in `src/capture/intercept/hooks.rs`; the hook
//! looks its event up in this table at compile time, so a hook whose name is missing here does not compile.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// What kind of blocking a violation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Category {
    /// The thread slept (`clock_nanosleep`, `nanosleep`, `usleep`, `sleep`).
    Sleep,
    /// A blocking name lookup (`getaddrinfo`, `gethostbyname`, ...).
    Dns,
    /// A blocking socket connect or accept.
    Net,
    /// Spawning, waiting for or joining a process or thread.
    Process,
    /// Opening, creating, renaming, removing or syncing a file or directory.
    File,
    /// Reading or writing a file descriptor that is not `O_NONBLOCK`, or waiting in `poll`/`select`.
    BlockingIo,
    /// `stat`-like metadata lookups.
    Metadata,
    /// Waiting for a lock: a futex wait (std `Mutex`, `Condvar`, `mpsc`, `park`), `flock`, `F_SETLKW`.
    LockWait,
    /// A poll of task code that ran longer than the slow-poll threshold.
    SlowPoll,
}

impl Category {
    /// Every category, in the catalogue's order.
    pub const ALL: [Category; 9] = [
        Category::Sleep,
        Category::Dns,
        Category::Net,
        Category::Process,
        Category::File,
        Category::BlockingIo,
        Category::Metadata,
        Category::LockWait,
        Category::SlowPoll,
    ];

    /// The category's name as used in reports and the run files, e.g. `"lock_wait"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Sleep => "sleep",
            Category::Dns => "dns",
            Category::Net => "net",
            Category::Process => "process",
            Category::File => "file",
            Category::BlockingIo => "blocking_io",
            Category::Metadata => "metadata",
            Category::LockWait => "lock_wait",
            Category::SlowPoll => "slow_poll",
        }
    }

    /// The static weight of the category, from [`CATALOGUE`]. Measured duration can raise a violation's weight
    /// above this, never lower it (lock waits are the exception: their weight comes from the measured wait).
    pub fn weight(self) -> Weight {
        CATALOGUE.iter().find(|row| row.category == self).map_or(Weight::Moderate, |row| row.weight)
    }

    /// How to fix a violation of this category, in one line.
    pub fn fix_hint(self) -> &'static str {
        CATALOGUE.iter().find(|row| row.category == self).map_or("", |row| row.fix)
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The weight of one violation, on aiocop's scale (heavy 50, moderate 10, light 1, trivial 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Weight {
    /// 0: harmless on its own, e.g. a write to stdout.
    Trivial,
    /// 1: cheap, e.g. a `stat`.
    Light,
    /// 10: worth fixing, e.g. opening a file.
    Moderate,
    /// 50: stalls the worker thread, e.g. a sleep or a DNS lookup.
    Heavy,
}

impl Weight {
    /// The numeric weight: 0, 1, 10 or 50.
    pub const fn value(self) -> u32 {
        match self {
            Weight::Trivial => 0,
            Weight::Light => 1,
            Weight::Moderate => 10,
            Weight::Heavy => 50,
        }
    }

    /// The weight whose value is the largest not above `value`: 50 and up heavy, 10 moderate, 1 light, 0 trivial.
    pub const fn from_value(value: u32) -> Weight {
        if value >= 50 {
            Weight::Heavy
        } else if value >= 10 {
            Weight::Moderate
        } else if value >= 1 {
            Weight::Light
        } else {
            Weight::Trivial
        }
    }

    /// The weight of a call of `category` that blocked for `duration`, given the slow-poll `threshold`.
    ///
    /// Measured cost can raise the static weight, never lower it: `>= 10 × threshold` is heavy, `>= threshold`
    /// at least moderate. A lock wait has no static weight: under 1 ms it is light, from 1 ms moderate. A trivial
    /// call (console output) stays trivial: on a loaded machine a write to stdout can take milliseconds of wall
    /// time while the thread is preempted, and logging is not the blocking a developer is after.
    pub fn for_call(base: Weight, category: Category, duration: Duration, threshold: Duration) -> Weight {
        if base == Weight::Trivial {
            return Weight::Trivial;
        }
        let base = if category == Category::LockWait {
            if duration < LOCK_WAIT_LIGHT_BELOW { Weight::Light } else { Weight::Moderate }
        } else {
            base
        };
        base.max(Self::for_duration(duration, threshold))
    }

    /// The weight measured time alone earns: heavy at `>= 10 × threshold`, moderate at `>= threshold`, otherwise
    /// trivial. This is also the weight of a slow poll.
    pub fn for_duration(duration: Duration, threshold: Duration) -> Weight {
        if duration >= threshold.saturating_mul(10) {
            Weight::Heavy
        } else if duration >= threshold {
            Weight::Moderate
        } else {
            Weight::Trivial
        }
    }
}

/// A lock wait shorter than this is light; from this on it is moderate. 1 ms.
pub const LOCK_WAIT_LIGHT_BELOW: Duration = Duration::from_millis(1);

impl Serialize for Weight {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.value())
    }
}

/// The level of a severity: high from 50, medium from 10, low below (aiocop's thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Severity below 10.
    Low,
    /// Severity 10 to 49.
    Medium,
    /// Severity 50 and above.
    High,
}

impl Level {
    /// The level of a severity (the max weight of a set of violations).
    pub const fn of(severity: u32) -> Level {
        if severity >= Weight::Heavy.value() {
            Level::High
        } else if severity >= Weight::Moderate.value() {
            Level::Medium
        } else {
            Level::Low
        }
    }

    /// The lowest severity that has this level: 0, 10 or 50.
    pub const fn min_severity(self) -> u32 {
        match self {
            Level::Low => 0,
            Level::Medium => Weight::Moderate.value(),
            Level::High => Weight::Heavy.value(),
        }
    }

    /// `"low"`, `"medium"` or `"high"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
        }
    }
}

/// Reads `low`, `medium` or `high` (as [`Level::as_str`] writes them, and as the header, run files and the CLI
/// spell them).
///
/// ```
/// use blockcop::Level;
/// assert_eq!("medium".parse::<Level>(), Ok(Level::Medium));
/// assert!("High".parse::<Level>().is_err());
/// ```
impl std::str::FromStr for Level {
    type Err = ParseLevelError;

    fn from_str(s: &str) -> Result<Level, ParseLevelError> {
        match s {
            "low" => Ok(Level::Low),
            "medium" => Ok(Level::Medium),
            "high" => Ok(Level::High),
            _ => Err(ParseLevelError { value: s.to_owned() }),
        }
    }
}

/// A level that is not `low`, `medium` or `high`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level {value:?}: expected low, medium or high")]
pub struct ParseLevelError {
    /// The text that was read.
    pub value: String,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the catalogue.
#[derive(Debug, Clone, Copy, Serialize)]
#[non_exhaustive]
pub struct CatalogueRow {
    /// The category.
    pub category: Category,
    /// The static weight on aiocop's scale.
    pub weight: Weight,
    /// The libc functions (events) of the category; `slow_poll` is the poll timer's own event.
    pub functions: &'static [&'static str],
    /// When a call of the category counts as blocking.
    pub condition: &'static str,
    /// How to fix it.
    pub fix: &'static str,
}

/// The default catalogue. Weights follow aiocop's scale: heavy 50, moderate 10, light 1, trivial 0.
pub static CATALOGUE: &[CatalogueRow] = &[
    CatalogueRow {
        category: Category::Sleep,
        weight: Weight::Heavy,
        functions: &["clock_nanosleep", "nanosleep", "usleep", "sleep"],
        condition: "always",
        fix: "use `tokio::time::sleep(..).await`",
    },
    CatalogueRow {
        category: Category::Dns,
        weight: Weight::Heavy,
        functions: &[
            "getaddrinfo",
            "getnameinfo",
            "gethostbyname",
            "gethostbyname_r",
            "gethostbyname2",
            "gethostbyname2_r",
            "gethostbyaddr",
            "gethostbyaddr_r",
        ],
        condition: "always (getnameinfo: unless fully numeric)",
        fix: "use `tokio::net::lookup_host(..).await`",
    },
    CatalogueRow {
        category: Category::Net,
        weight: Weight::Heavy,
        functions: &["connect", "accept", "accept4"],
        condition: "the socket is not `O_NONBLOCK`",
        fix: "use `tokio::net` (TcpStream::connect, TcpListener::accept)",
    },
    CatalogueRow {
        category: Category::Process,
        weight: Weight::Heavy,
        functions: &[
            "posix_spawn",
            "posix_spawnp",
            "fork",
            "execve",
            "execvp",
            "system",
            "waitpid",
            "wait4",
            "pthread_join",
        ],
        condition: "waitpid/wait4 without `WNOHANG`; fork in the parent",
        fix: "use `tokio::process::Command`, or `spawn_blocking` to join a thread",
    },
    CatalogueRow {
        category: Category::File,
        weight: Weight::Moderate,
        functions: &[
            "open",
            "open64",
            "openat",
            "openat64",
            "creat",
            "creat64",
            "opendir",
            "rename",
            "renameat",
            "unlink",
            "unlinkat",
            "mkdir",
            "mkdirat",
            "rmdir",
            "truncate",
            "truncate64",
            "fsync",
            "fdatasync",
        ],
        condition: "always",
        fix: "use `tokio::fs`, or move the work into `tokio::task::spawn_blocking`",
    },
    CatalogueRow {
        category: Category::BlockingIo,
        weight: Weight::Moderate,
        functions: &[
            "read", "pread", "pread64", "readv", "write", "pwrite", "pwrite64", "writev", "recv", "recvfrom",
            "recvmsg", "send", "sendto", "sendmsg", "poll", "select",
        ],
        condition: "the fd is not `O_NONBLOCK` (and no `MSG_DONTWAIT`); poll/select with a non-zero timeout; writes to fd 1 and 2 are trivial",
        fix: "use the async client (`tokio::io`, `tokio::net`), or move the work into `tokio::task::spawn_blocking`",
    },
    CatalogueRow {
        category: Category::Metadata,
        weight: Weight::Light,
        functions: &[
            "stat",
            "stat64",
            "lstat",
            "lstat64",
            "fstat",
            "fstat64",
            "fstatat",
            "fstatat64",
            "statx",
            "access",
            "faccessat",
        ],
        condition: "always",
        fix: "use `tokio::fs::metadata`, or move the work into `tokio::task::spawn_blocking`",
    },
    CatalogueRow {
        category: Category::LockWait,
        weight: Weight::Light,
        functions: &["futex", "flock", "fcntl"],
        condition: "a futex wait through `syscall(SYS_futex, ..)` (std `Mutex`, `Condvar`, `mpsc`, `thread::park`, parking_lot); flock without `LOCK_NB`; fcntl `F_SETLKW`",
        fix: "use `tokio::sync` locks and channels, or shorten the critical section",
    },
    CatalogueRow {
        category: Category::SlowPoll,
        weight: Weight::Moderate,
        functions: &["slow_poll", "stuck_poll"],
        condition: "a poll ran past the threshold, not counting time already reported as blocking calls",
        fix: "move CPU-heavy work into `tokio::task::spawn_blocking` or `block_in_place`, or split it with \
              `tokio::task::yield_now().await`",
    },
];

/// Synchronous database and network clients, by function-path prefix: a blocking call whose stack passes through
/// one of them weighs heavy, whatever its event, as aiocop classes network and database operations as heavy. A
/// call to a warm database through rusqlite makes only cheap `pread64`/`fstat64` calls, but every one of them holds
/// the worker thread for as long as the query runs, and the next query may wait on disk or a lock.
///
/// Add your own with [`ConfigBuilder::blocking_client`](crate::ConfigBuilder::blocking_client).
pub static BLOCKING_CLIENTS: &[&str] = &[
    "rusqlite::",
    "sqlite::",
    "postgres::",
    "mysql::",
    "diesel::",
    "r2d2::",
    "oracle::",
    "odbc_api::",
    "mongodb::sync::",
    "redis::",
    "memcache::",
    "ureq::",
    "reqwest::blocking::",
    "attohttpc::",
    "ldap3::",
    "ssh2::",
    "ftp::",
    "suppaftp::",
];

/// Whether a function path belongs to one of `clients` (prefixes as in [`BLOCKING_CLIENTS`]); a leading `<` of a
/// trait-impl path (`<rusqlite::Connection as ..>`) is ignored.
pub(crate) fn is_blocking_client(function: &str, clients: &[String]) -> bool {
    let f = function.strip_prefix('<').unwrap_or(function);
    clients.iter().any(|c| f.starts_with(c.as_str()))
}

/// An event: a hooked function (or `slow_poll`) and its category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) name: &'static str,
    pub(crate) category: Category,
}

/// Looks an event up in [`CATALOGUE`]. Used in `const` items, so a missing name fails the build.
pub(crate) const fn event(name: &'static str) -> Event {
    let mut r = 0;
    while r < CATALOGUE.len() {
        let row = &CATALOGUE[r];
        let mut f = 0;
        while f < row.functions.len() {
            if str_eq(row.functions[f], name) {
                return Event { name, category: row.category };
            }
            f += 1;
        }
        r += 1;
    }
    panic!("event missing from the catalogue")
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

pub(crate) const SLOW_POLL: Event = event("slow_poll");
pub(crate) const STUCK_POLL: Event = event("stuck_poll");

/// The catalogue's `&'static str` for an event name read back from a run file; an unknown name (from another
/// blockcop version) is leaked once and reused.
/// Whether `name` is an event of the catalogue: a libc function it intercepts, `slow_poll` or `stuck_poll`.
pub(crate) fn is_event(name: &str) -> bool {
    CATALOGUE.iter().any(|row| row.functions.contains(&name))
}

pub(crate) fn intern(name: &str) -> &'static str {
    if let Some(known) = CATALOGUE.iter().flat_map(|r| r.functions.iter()).find(|f| **f == name) {
        return known;
    }
    static OTHERS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut others = OTHERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = others.iter().find(|o| **o == name) {
        return found;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    others.push(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_category_and_weights_follow_aiocop() {
        assert_eq!(event("clock_nanosleep").category, Category::Sleep);
        assert_eq!(event("getaddrinfo").category, Category::Dns);
        assert_eq!(event("open64").category, Category::File);
        assert_eq!(event("statx").category, Category::Metadata);
        assert_eq!(Category::Sleep.weight(), Weight::Heavy);
        assert_eq!(Category::File.weight(), Weight::Moderate);
        assert_eq!(Category::Metadata.weight(), Weight::Light);
    }

    #[test]
    fn every_function_is_listed_once() {
        let mut all: Vec<&str> = CATALOGUE.iter().flat_map(|r| r.functions.iter().copied()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a function is listed in two categories");
    }

    #[test]
    fn every_category_has_a_row_and_a_fix() {
        let mut seen = std::collections::BTreeSet::new();
        for c in Category::ALL {
            // A new variant fails to compile here until it is added to `Category::ALL` as well.
            match c {
                Category::Sleep
                | Category::Dns
                | Category::Net
                | Category::Process
                | Category::File
                | Category::BlockingIo
                | Category::Metadata
                | Category::LockWait
                | Category::SlowPoll => {}
            }
            assert!(seen.insert(c), "{c} is twice in Category::ALL");
            assert!(CATALOGUE.iter().any(|r| r.category == c), "{c} has no row");
            assert!(!c.fix_hint().is_empty(), "{c} has no fix hint");
        }
    }

    #[test]
    fn readme_table_matches_the_catalogue_row_by_row() {
        let readme = include_str!("../README.md");
        let table: Vec<&str> = readme
            .lines()
            .skip_while(|l| *l != "| category | functions | weight | counted when |")
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        let rows: Vec<String> = CATALOGUE
            .iter()
            .map(|row| {
                // How the weight applies (Weight::for_call, Weight::for_duration), in the table's words.
                let weight = match row.category {
                    Category::LockWait => "by measured wait".to_owned(),
                    Category::SlowPoll => format!("{}, heavy at 10× (stuck: heavy)", weight_name(row.weight)),
                    _ => weight_name(row.weight).to_owned(),
                };
                format!("| {} | {} | {weight} | {} |", row.category, row.functions.join(", "), row.condition)
            })
            .collect();
        assert_eq!(table, rows, "README's catalogue table (whole rows, in order) and CATALOGUE differ");
    }

    fn weight_name(w: Weight) -> &'static str {
        match w {
            Weight::Trivial => "trivial",
            Weight::Light => "light",
            Weight::Moderate => "moderate",
            Weight::Heavy => "heavy",
        }
    }

    #[test]
    fn level_thresholds_follow_aiocop() {
        assert_eq!(Level::of(0), Level::Low);
        assert_eq!(Level::of(9), Level::Low);
        assert_eq!(Level::of(10), Level::Medium);
        assert_eq!(Level::of(49), Level::Medium);
        assert_eq!(Level::of(50), Level::High);
        assert_eq!(Level::of(500), Level::High);
    }

    #[test]
    fn duration_raises_weight_never_lowers_it() {
        let t = Duration::from_millis(10);
        let w = |base, cat, ms| Weight::for_call(base, cat, Duration::from_millis(ms), t);
        assert_eq!(w(Weight::Light, Category::Metadata, 0), Weight::Light);
        assert_eq!(w(Weight::Light, Category::Metadata, 10), Weight::Moderate);
        assert_eq!(w(Weight::Light, Category::Metadata, 100), Weight::Heavy);
        // Console output stays trivial, however long the write (or the wait for its lock) took.
        assert_eq!(w(Weight::Trivial, Category::BlockingIo, 99), Weight::Trivial);
        assert_eq!(w(Weight::Heavy, Category::Sleep, 0), Weight::Heavy);
        // Lock waits are weighted by the wait itself.
        let lock = |us| Weight::for_call(Weight::Light, Category::LockWait, Duration::from_micros(us), t);
        assert_eq!(lock(999), Weight::Light);
        assert_eq!(lock(1_000), Weight::Moderate);
        assert_eq!(lock(10_000), Weight::Moderate);
        assert_eq!(lock(100_000), Weight::Heavy);
        // Slow polls: moderate at the threshold, heavy at ten times.
        assert_eq!(Weight::for_duration(Duration::from_millis(9), t), Weight::Trivial);
        assert_eq!(Weight::for_duration(Duration::from_millis(10), t), Weight::Moderate);
        assert_eq!(Weight::for_duration(Duration::from_millis(100), t), Weight::Heavy);
    }
}
