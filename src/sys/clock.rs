//! Clocks: the CPU's time-stamp counter, the kernel's coarse monotonic clock (through the vDSO), and per-thread CPU
//! clocks.

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

/// The calling thread's CPU time in ns.
pub(crate) fn own_cpu_ns() -> Option<u64> {
    cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Thread `tid`'s CPU time in ns (Linux): the kernel's per-thread CPU clock id for a tid, as glibc's
/// `pthread_getcpuclockid` computes it, without touching the thread's `pthread` struct (which may be gone).
pub(crate) fn thread_cpu_ns(tid: i32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        const CPUCLOCK_PERTHREAD_SCHED: libc::clockid_t = 4 | 2;
        cpu_ns((!tid << 3) | CPUCLOCK_PERTHREAD_SCHED)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        None
    }
}

fn cpu_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which we own; an invalid clock id (a thread that is gone) is an
    // error return, not undefined behaviour.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
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
}
