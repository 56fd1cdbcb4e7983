//! The libc interposer and the thread-local state its hooks read.
//!
//! On Linux/glibc (feature `intercept`, on by default) `hooks` defines the catalogue's libc functions with the C
//! ABI. The linker resolves std's (and C code's) calls to them, and each hook forwards to libc's own definition,
//! found with `dlsym(RTLD_NEXT, ..)` once and cached in an atomic. Outside a scope a hook costs one thread-local
//! read. Inside one it times the call, captures the raw stack into a fixed buffer and records a violation; the
//! stack is symbolized later, off the intercepted call, when the scope's owner takes its violations.
//!
//! This module and [`crate::sampler`] hold all of blockcop's `unsafe` code (the root denies it everywhere else).
#![allow(unsafe_code)]

use std::fmt::{self, Write as _};

use crate::violation::Weight;

pub(crate) mod thread;

#[cfg(all(
    feature = "intercept",
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod hooks;

/// Whether this build interposes libc calls (Linux/glibc with the `intercept` feature).
pub(crate) const INTERPOSING: bool = cfg!(all(
    feature = "intercept",
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
));

/// The most frames a violation's raw stack keeps: enough to reach the user's line through a C library (a read
/// inside a bundled SQLite's parser is about 40 frames below the rusqlite call that caused it, and a handler's own
/// frame another 10 to 20 further out). Capture walks only the frames there are, so shallow stacks cost no more.
pub(crate) const MAX_FRAMES: usize = 128;

/// A raw stack: return addresses, innermost first, in a fixed buffer so capturing allocates nothing.
#[derive(Clone, Copy)]
pub(crate) struct RawStack {
    pub(crate) ips: [usize; MAX_FRAMES],
    pub(crate) len: usize,
}

impl RawStack {
    pub(crate) const EMPTY: RawStack = RawStack { ips: [0; MAX_FRAMES], len: 0 };

    /// Captures the calling thread's stack (at most [`MAX_FRAMES`] frames).
    #[inline(never)]
    pub(crate) fn capture() -> RawStack {
        let mut stack = RawStack::EMPTY;
        // SAFETY: the unsynchronized variant only skips backtrace's global lock, which exists to serialize
        // dbghelp on Windows; on Linux the unwinder (`_Unwind_Backtrace`) is thread-safe. The callback only writes
        // into a buffer it owns and stops when the buffer is full.
        unsafe {
            backtrace::trace_unsynchronized(|frame| {
                stack.ips[stack.len] = frame.ip() as usize;
                stack.len += 1;
                stack.len < MAX_FRAMES
            });
        }
        stack
    }

    pub(crate) fn ips(&self) -> &[usize] {
        &self.ips[..self.len]
    }
}

/// Two stacks are equal when their captured frames are: the unused rest of the buffer is not compared.
impl PartialEq for RawStack {
    fn eq(&self, other: &RawStack) -> bool {
        self.ips() == other.ips()
    }
}

impl Eq for RawStack {}

impl fmt::Debug for RawStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ips().iter().map(|ip| format!("{ip:#x}"))).finish()
    }
}

/// The most bytes a violation's detail holds.
pub(crate) const DETAIL_MAX: usize = 128;

/// A violation's short detail (path, `host:port`, program, fd, requested sleep), written into a fixed buffer and
/// truncated at [`DETAIL_MAX`] bytes on a character boundary. A hook may also override the event's weight.
#[derive(Clone, Copy)]
pub(crate) struct Detail {
    buf: [u8; DETAIL_MAX],
    len: usize,
    pub(crate) weight: Option<Weight>,
}

impl Detail {
    pub(crate) const fn new() -> Detail {
        Detail { buf: [0; DETAIL_MAX], len: 0, weight: None }
    }

    pub(crate) fn text(s: &str) -> Detail {
        let mut d = Detail::new();
        let _ = d.write_str(s);
        d
    }

    pub(crate) fn with_weight(mut self, weight: Weight) -> Detail {
        self.weight = Some(weight);
        self
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are ever copied in, so this cannot fail; fall back to "" regardless.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for Detail {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = DETAIL_MAX - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl fmt::Debug for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The CPU's time-stamp counter, where there is one (x86_64); `None` elsewhere.
#[inline(always)]
pub(crate) fn rdtsc() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions and exists on every x86_64 CPU.
        Some(unsafe { core::arch::x86_64::_rdtsc() })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// The kernel's coarse monotonic clock in nanoseconds (Linux: `CLOCK_MONOTONIC_COARSE`, the monotonic time at the
/// last timer tick, read from the vDSO without a system call: about 2.5 ns against about 8 ns for `rdtsc` on the
/// machine the README's numbers come from). `None` where there is no such clock.
#[inline(always)]
pub(crate) fn coarse_ns() -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let vdso = VDSO_CLOCK_GETTIME.load(std::sync::atomic::Ordering::Relaxed);
        let rc = if vdso == 0 {
            // SAFETY: clock_gettime writes one timespec, which we own; the clock id is a constant the kernel knows.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) }
        } else {
            // SAFETY: a non-zero `VDSO_CLOCK_GETTIME` is the vDSO's own `clock_gettime` (see `find_vdso_clock`),
            // which has libc's signature and contract; it writes one timespec, which we own.
            unsafe { std::mem::transmute::<usize, ClockGettime>(vdso)(libc::CLOCK_MONOTONIC_COARSE, &mut ts) }
        };
        if rc != 0 {
            return None;
        }
        Some((ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// The vDSO's `clock_gettime`, once found (0: not found, use libc's). Calling it directly skips glibc's wrapper,
/// about 1.7 ns of the 4 ns a coarse read costs through libc here.
#[cfg(any(target_os = "linux", target_os = "android"))]
static VDSO_CLOCK_GETTIME: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Looks the vDSO's `clock_gettime` up (glibc lists the vDSO among the loaded objects as `linux-vdso.so.1`) and
/// keeps it if it agrees with libc's.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn find_vdso_clock() {
    #[cfg(target_arch = "x86_64")]
    const SYMBOL: &std::ffi::CStr = c"__vdso_clock_gettime";
    #[cfg(not(target_arch = "x86_64"))]
    const SYMBOL: &std::ffi::CStr = c"__kernel_clock_gettime";
    // SAFETY: RTLD_NOLOAD only looks for an object already loaded, and dlsym reads its symbol table; both take
    // NUL-terminated names.
    let sym = unsafe {
        let handle = libc::dlopen(c"linux-vdso.so.1".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY);
        if handle.is_null() {
            return;
        }
        libc::dlsym(handle, SYMBOL.as_ptr())
    };
    if sym.is_null() {
        return;
    }
    // SAFETY: the vDSO's clock_gettime has libc's signature.
    let vdso = unsafe { std::mem::transmute::<*mut libc::c_void, ClockGettime>(sym) };
    let read = |f: ClockGettime| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: writes one timespec we own.
        (unsafe { f(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0).then_some((ts.tv_sec, ts.tv_nsec))
    };
    let (a, b, c) = (read(libc::clock_gettime), read(vdso), read(libc::clock_gettime));
    if let (Some(a), Some(b), Some(c)) = (a, b, c)
        && a <= b
        && b <= c
    {
        VDSO_CLOCK_GETTIME.store(sym as usize, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Finds the fastest way to read the coarse clock (the vDSO's function, else libc's) and returns the clock's
/// resolution in nanoseconds (the kernel's tick period: 4 ms at `HZ=250`), if there is a coarse clock.
pub(crate) fn init_coarse_clock() -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        find_vdso_clock();
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_getres writes one timespec, which we own.
        if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
            return None;
        }
        let ns =
            u64::try_from(ts.tv_sec).ok()?.checked_mul(1_000_000_000)?.checked_add(u64::try_from(ts.tv_nsec).ok()?)?;
        (ns > 0).then_some(ns)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}

/// Runs `f` when the process exits (`exit()` or returning from `main`), on the exiting thread, while other threads
/// still run. Only the first function registered is kept (blockcop has one: flushing the run file).
pub(crate) fn at_exit(f: fn()) {
    static AT_EXIT: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();
    extern "C" fn run_at_exit() {
        // Never unwind out of an extern "C" function.
        let _ = std::panic::catch_unwind(|| {
            if let Some(f) = AT_EXIT.get() {
                f();
            }
        });
    }
    if AT_EXIT.set(f).is_ok() {
        #[cfg(unix)]
        // SAFETY: registers a function that takes no arguments, touches only 'static state and never unwinds.
        unsafe {
            libc::atexit(run_at_exit);
        }
    }
}

/// The OS id of the calling thread.
pub(crate) fn thread_id() -> u64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() };
        u64::try_from(tid).unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn coarse_clock_is_read_through_the_vdso_and_agrees_with_libc() {
        assert!(init_coarse_clock().is_some());
        assert_ne!(VDSO_CLOCK_GETTIME.load(std::sync::atomic::Ordering::Relaxed), 0, "glibc lists linux-vdso.so.1");
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: writes one timespec we own.
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) }, 0);
        let libc_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        let ours = coarse_ns().expect("coarse clock");
        assert!(ours >= libc_ns && ours - libc_ns < 1_000_000_000, "libc {libc_ns}, vDSO {ours}");
    }

    #[test]
    fn detail_truncates_on_a_char_boundary() {
        let mut d = Detail::new();
        let long = "é".repeat(100); // 200 bytes
        write!(d, "{long}").unwrap();
        assert_eq!(d.as_str().len(), 128);
        assert!(d.as_str().chars().all(|c| c == 'é'));
        let mut d = Detail::new();
        write!(d, "x{}", "é".repeat(100)).unwrap();
        assert_eq!(d.as_str().len(), 127);
    }

    #[test]
    fn capture_gets_frames() {
        let s = RawStack::capture();
        assert!(s.len > 2, "{s:?}");
    }
}
