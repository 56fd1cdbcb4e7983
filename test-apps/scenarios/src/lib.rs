//! Blocking mistakes as they appear in real async code, one per category of blockcop's catalogue, and the
//! non-blocking twins that must stay clean.
//!
//! Every blocking line ends with a `// blocks: <event>` marker; the integration tests find the expected call site
//! by that marker, so moving a line cannot silently break them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Long enough to be unmistakable against a 10 ms slow-poll threshold, short enough for a fast test suite.
pub const BLOCK_FOR: Duration = Duration::from_millis(50);

// ---- sleep -------------------------------------------------------------------------------------------------

/// A retry backoff written with the std sleep.
pub async fn sleep_in_backoff() {
    std::thread::sleep(BLOCK_FOR); // blocks: clock_nanosleep
}

// ---- dns ---------------------------------------------------------------------------------------------------

/// Resolving a host name through `ToSocketAddrs`.
pub async fn resolve_with_to_socket_addrs() -> usize {
    let addrs = ("localhost", 8080).to_socket_addrs(); // blocks: getaddrinfo
    addrs.map(Iterator::count).unwrap_or(0)
}

// ---- net ---------------------------------------------------------------------------------------------------

/// Connecting with the std `TcpStream`.
pub async fn connect_with_std(addr: SocketAddr) -> bool {
    let stream = TcpStream::connect(addr); // blocks: connect
    stream.is_ok()
}

/// Accepting with the std `TcpListener`.
pub async fn accept_with_std(listener: &TcpListener) -> bool {
    let conn = listener.accept(); // blocks: accept4
    conn.is_ok()
}

// ---- process -----------------------------------------------------------------------------------------------

/// Running a program with `std::process::Command`.
pub async fn run_program() -> bool {
    let status = std::process::Command::new("true").status(); // blocks: posix_spawnp
    status.is_ok_and(|s| s.success())
}

/// Joining a std thread.
pub async fn join_thread() {
    let worker = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(20)));
    let _ = worker.join(); // blocks: pthread_join
}

// ---- file --------------------------------------------------------------------------------------------------

/// Reading a template with `std::fs`.
pub async fn read_template(path: &Path) -> usize {
    let text = std::fs::read_to_string(path); // blocks: open64
    text.map_or(0, |t| t.len())
}

/// Opening a file that does not exist: the call fails, and the caller must get its error as if nothing had
/// intercepted it (`errno` survives blockcop's own work in the hook).
pub async fn open_missing_file(path: &Path) -> Option<std::io::ErrorKind> {
    let opened = std::fs::File::open(path); // blocks: open64
    opened.err().map(|e| e.kind())
}

/// Creating a temporary file through a dependency (`tempfile`) that calls std underneath.
pub async fn temp_file_through_dependency() -> bool {
    let file = tempfile::tempfile(); // blocks: open64
    file.is_ok()
}

/// A request handler that reaches `std::fs` two calls deep through the app's own helpers.
pub async fn config_through_helpers(path: &Path) -> usize {
    load_settings(path)
}

fn load_settings(path: &Path) -> usize {
    read_settings_file(path)
}

fn read_settings_file(path: &Path) -> usize {
    let bytes = std::fs::read(path); // blocks: open64
    bytes.map_or(0, |b| b.len())
}

// ---- blocking fd I/O ---------------------------------------------------------------------------------------

/// Reading from a blocking std socket.
pub async fn read_blocking_socket(stream: &mut UnixStream) -> usize {
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf); // blocks: recv
    n.unwrap_or(0)
}

/// Writing to a blocking std socket.
pub async fn write_blocking_socket(stream: &mut UnixStream) -> bool {
    let r = stream.write_all(b"ping"); // blocks: send
    r.is_ok()
}

// ---- metadata ----------------------------------------------------------------------------------------------

/// Checking a file's size with `std::fs::metadata`.
pub async fn file_size(path: &Path) -> u64 {
    let meta = std::fs::metadata(path); // blocks: statx
    meta.map_or(0, |m| m.len())
}

/// `calls` `Path::metadata` calls in a row, made `depth` frames down (as a handler's calls through layers of
/// helpers and a database driver are): each recorded call costs blockcop a deep stack capture, none costs the code
/// itself much CPU.
pub async fn many_metadata_calls_deep(path: &Path, depth: u32, calls: u32) -> u64 {
    metadata_calls_at_depth(path, depth, calls)
}

#[inline(never)]
fn metadata_calls_at_depth(path: &Path, depth: u32, calls: u32) -> u64 {
    if depth > 0 {
        return std::hint::black_box(metadata_calls_at_depth(path, depth - 1, calls));
    }
    (0..calls).map(|_| path.metadata().map_or(0, |m| m.len())).sum() // blocks: statx
}

// ---- sync database client -----------------------------------------------------------------------------------

/// Creates a SQLite database of one table at `path` (call it outside the scope).
pub fn create_sqlite_db(path: &std::path::Path) -> rusqlite::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('a');")
}

/// The first query on a fresh connection to a bundled SQLite: SQLite reads the schema from inside its parser, so
/// the read is about 30 C and rusqlite frames below this line.
pub async fn sqlite_first_query(conn: rusqlite::Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0)).unwrap_or(-1) // blocks: pread64
}

// ---- lock wait ---------------------------------------------------------------------------------------------

/// Taking a std `Mutex` that another thread holds (the caller arranges that it is held).
pub async fn wait_for_std_mutex(lock: Arc<Mutex<u64>>) -> u64 {
    let guard = lock.lock(); // blocks: futex
    guard.map_or(0, |g| *g)
}

/// Logging to stdout (as `tracing_subscriber::fmt` does, through `io::stdout()`) while another thread holds the
/// stdout lock: the wait for the lock is console output, trivial like the write it guards.
pub async fn print_while_stdout_is_locked() {
    let _ = writeln!(std::io::stdout(), "scenario: logging while another thread writes"); // blocks: futex
}

/// Holds the stdout lock on a new thread for `hold`; returns once it is held.
pub fn hold_stdout_on_other_thread(hold: Duration) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _guard = std::io::stdout().lock();
        let _ = tx.send(());
        std::thread::sleep(hold);
    });
    let _ = rx.recv();
    holder
}

/// Holds `lock` on a new thread for `hold`; returns once it is held.
pub fn hold_lock_on_other_thread(lock: Arc<Mutex<u64>>, hold: Duration) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _guard = lock.lock();
        let _ = tx.send(());
        std::thread::sleep(hold);
    });
    let _ = rx.recv();
    holder
}

// ---- slow poll ---------------------------------------------------------------------------------------------

/// CPU-bound work inline: a hash loop that computes for about `budget` of CPU time, without yielding. The loop is
/// bounded by a calibrated amount of work, not by a clock, so it does the same work on a loaded machine (where it
/// takes longer) and makes no system call a stack sample could land on. The work is measured when the future is
/// made (the first time in a process, see [`rounds_for`]), not when it is polled.
pub fn hash_inline(budget: Duration) -> impl std::future::Future<Output = u64> + Send {
    let rounds = rounds_for(budget);
    async move {
        let mut h = 0xcbf2_9ce4_8422_2325_u64;
        for _ in 0..rounds {
            h = (0..HASH_ROUND).fold(h, |h, i| (h ^ i).wrapping_mul(0x100_0000_01b3)); // blocks: slow_poll
        }
        std::hint::black_box(h)
    }
}

/// Iterations of one round of [`hash_inline`]'s loop.
const HASH_ROUND: u64 = 20_000;

/// How many rounds of [`hash_inline`]'s loop take `budget` of CPU time on this machine: measured once per process
/// by the thread's CPU clock (so machine load does not stretch it), as the fastest of five 1 ms runs. The loop can
/// take up to about twice that CPU time while a sibling hyperthread is busy, never less.
pub fn rounds_for(budget: Duration) -> u64 {
    static NS_PER_ROUND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ns_per_round = *NS_PER_ROUND.get_or_init(|| {
        let mut best = f64::MAX;
        let mut h = 1u64;
        for _ in 0..5 {
            let start = thread_cpu_ns();
            let mut rounds = 0u64;
            while thread_cpu_ns() - start < 1_000_000 {
                h = (0..HASH_ROUND).fold(h, |h, i| (h ^ i).wrapping_mul(0x100_0000_01b3));
                rounds += 1;
            }
            best = best.min((thread_cpu_ns() - start) as f64 / rounds as f64);
        }
        std::hint::black_box(h);
        best
    });
    (budget.as_nanos() as f64 / ns_per_round).ceil() as u64
}

/// The calling thread's CPU time in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---- the fixed twins: none of these may be flagged ----------------------------------------------------------

/// `tokio::time::sleep` instead of the std sleep.
pub async fn tokio_sleep() {
    tokio::time::sleep(BLOCK_FOR).await;
}

/// `tokio::fs` instead of `std::fs`.
pub async fn tokio_fs(path: &Path) -> usize {
    let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
    let meta = tokio::fs::metadata(path).await.map(|m| m.len()).unwrap_or(0);
    text.len() + usize::try_from(meta).unwrap_or(0)
}

/// `tokio::net::lookup_host` instead of `ToSocketAddrs`.
pub async fn tokio_lookup_host() -> usize {
    tokio::net::lookup_host("localhost:8080").await.map(Iterator::count).unwrap_or(0)
}

/// A round trip over tokio's non-blocking sockets: bind, connect, accept, write, read.
pub async fn tokio_socket_round_trip() -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let client = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"hello").await.expect("write");
        s.shutdown().await.expect("shutdown");
    });
    let (mut conn, _) = listener.accept().await.expect("accept");
    let mut got = Vec::new();
    conn.read_to_end(&mut got).await.expect("read");
    client.await.expect("client task");
    got
}

/// `tokio::process` instead of `std::process`: what blockcop's fix hint for `std::process` recommends.
pub async fn tokio_process() -> bool {
    let status = tokio::process::Command::new("true").status().await;
    let output = tokio::process::Command::new("echo").arg("hi").output().await;
    status.is_ok_and(|s| s.success()) && output.is_ok_and(|o| o.stdout == b"hi\n")
}

/// Blocking work moved to the blocking pool with `spawn_blocking`.
pub async fn spawn_blocking_work(path: std::path::PathBuf) -> usize {
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(BLOCK_FOR);
        std::fs::read(&path).map_or(0, |b| b.len())
    })
    .await
    .unwrap_or(0)
}

/// Blocking work inside `block_in_place` (multi-thread runtime only).
pub async fn block_in_place_work(path: &Path) -> usize {
    tokio::task::block_in_place(|| {
        std::thread::sleep(BLOCK_FOR);
        std::fs::read(path).map_or(0, |b| b.len())
    })
}

/// Shared state behind `tokio::sync::Mutex`, contended by another task.
pub async fn tokio_mutex() -> u64 {
    let lock = Arc::new(tokio::sync::Mutex::new(0u64));
    let held = lock.clone().lock_owned().await;
    let waiter = {
        let lock = lock.clone();
        tokio::spawn(async move { *lock.lock().await + 1 })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(held);
    waiter.await.unwrap_or(0)
}

/// CPU-heavy work moved to the blocking pool.
pub async fn hash_in_spawn_blocking(budget: Duration) -> u64 {
    tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        let mut h = 0u64;
        while start.elapsed() < budget {
            h = h.wrapping_add(1);
        }
        h
    })
    .await
    .unwrap_or(0)
}
