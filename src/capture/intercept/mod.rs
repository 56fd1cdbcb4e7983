//! The libc interposer and the thread-local state its hooks read.
//!
//! On Linux/glibc (feature `intercept`, on by default) `hooks` defines the catalogue's libc functions with the C
//! ABI. The linker resolves std's (and C code's) calls to them, and each hook forwards to libc's own definition,
//! found with `dlsym(RTLD_NEXT, ..)` once and cached in an atomic. Outside a scope a hook costs one thread-local
//! read. Inside one it times the call, captures the raw stack into a fixed buffer and records a violation; the
//! stack is symbolized later, off the intercepted call, when the scope's owner takes its violations.
//!
//! This module, [`crate::capture::sampler`] and [`crate::sys`] hold all of blockcop's `unsafe` code (the root denies it
//! everywhere else).
#![allow(unsafe_code)]

use std::fmt::{self, Write as _};

use crate::catalogue::Weight;

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

#[cfg(test)]
mod tests {
    use super::*;

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
