//! The sampling signal (`SIGURG`): installing the handler, the handler itself (copies the interrupted stack into the
//! thread's slot; no allocation, no lock, `errno` preserved) and the unwinder guard.

use super::*;

pub(super) static HANDLER_INSTALLED: AtomicBool = AtomicBool::new(false);

#[cfg(target_os = "linux")]
pub(super) const SAMPLE_SIGNAL: libc::c_int = libc::SIGURG;

/// Installs the `SIGURG` handler unless the program has one; returns whether sampling is on.
pub(super) fn install_handler() -> bool {
    #[cfg(target_os = "linux")]
    {
        // The unwinder sets itself up on first use (it reads the program headers and caches them); do that here,
        // never inside a handler.
        let _ = RawStack::capture();
        find_unwinder();
        // SAFETY: `sigaction` with a null new action only reads the current one into `old`, which is zeroed memory
        // of the right type.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above: a null new action, and `old` is a valid `sigaction` to write.
        if unsafe { libc::sigaction(SAMPLE_SIGNAL, std::ptr::null(), &mut old) } != 0 {
            return false;
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            eprintln!("blockcop: SIGURG already has a handler; stack sampling of slow polls is off");
            return false;
        }
        // SAFETY: a zeroed sigaction is valid; we fill in the handler, flags and an empty mask, then install it.
        // The handler is async-signal-safe (see `on_signal`).
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            if libc::sigaction(SAMPLE_SIGNAL, &act, std::ptr::null_mut()) != 0 {
                return false;
            }
        }
        HANDLER_INSTALLED.store(true, Ordering::Relaxed);
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Where the unwinder's own code (libgcc_s) is mapped. A thread interrupted inside it, while it unwinds a panic
/// and switches stacks, has no unwind information valid at that instruction: such a sample is skipped, never taken.
pub(super) static UNWINDER: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));

#[cfg(target_os = "linux")]
pub(super) fn find_unwinder() {
    // SAFETY: dlsym with a NUL-terminated name; dladdr fills a zeroed Dl_info we own.
    let (fname, base) = unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, c"_Unwind_RaiseException".as_ptr());
        if sym.is_null() {
            return;
        }
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(sym, &mut info) == 0 || info.dli_fname.is_null() {
            return;
        }
        (std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned(), info.dli_fbase as usize)
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let target = std::fs::canonicalize(&fname).ok();
    let (mut lo, mut hi) = (usize::MAX, 0);
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(path)) = (parts.next(), parts.nth(4)) else { continue };
        let same = std::fs::canonicalize(path).ok() == target && target.is_some();
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else { continue };
        if same || (a <= base && base < b) {
            lo = lo.min(a);
            hi = hi.max(b);
        }
    }
    if lo < hi {
        UNWINDER.0.store(lo, Ordering::Relaxed);
        UNWINDER.1.store(hi, Ordering::Relaxed);
    }
}

/// The sampling signal handler: copies the interrupted thread's return addresses into its slot. It allocates
/// nothing, takes no lock, never unwinds, and restores `errno`.
#[cfg(target_os = "linux")]
extern "C" fn on_signal(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let saved = unsafe { *libc::__errno_location() };
    if let Some(slot) = crate::capture::intercept::thread::current_slot() {
        let generation = slot.generation.load(Ordering::Relaxed);
        if slot.requested.load(Ordering::Acquire) == generation
            && slot.poll_start.load(Ordering::Relaxed) != 0
            && slot.sample_state.load(Ordering::Relaxed) == EMPTY
        {
            if interrupted_in_unwinder(ctx) {
                // Answer with an empty sample, so the watchdog does not wait for one.
                slot.sample_len.store(0, Ordering::Relaxed);
                slot.sample_state.store(READY, Ordering::Release);
                // SAFETY: as above.
                unsafe { *libc::__errno_location() = saved };
                return;
            }
            let mut n = 0;
            // SAFETY: see `unsafe impl Sync for Slot`: only this handler writes the buffer, and only now. The
            // unsynchronized trace avoids backtrace's lock, which the interrupted thread could be holding; the
            // unwinder was set up at install time.
            unsafe {
                let buf = &mut *slot.sample.get();
                backtrace::trace_unsynchronized(|frame| {
                    buf[n] = frame.ip() as usize;
                    n += 1;
                    n < MAX_FRAMES
                });
            }
            if slot.context_wanted.load(Ordering::Relaxed) == generation {
                // SAFETY: as for the buffer above. The previous context was taken by `collect` before it set
                // `EMPTY`, so nothing is overwritten. Only a stuck poll's report asks for it (it holds the scope).
                unsafe { *slot.sample_context.get() = crate::capture::intercept::thread::poll_context_for_signal() };
            }
            slot.sample_len.store(n, Ordering::Relaxed);
            slot.sample_state.store(READY, Ordering::Release);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Whether the interrupted instruction lies in the unwinder's code (see [`UNWINDER`]).
#[cfg(target_os = "linux")]
pub(super) fn interrupted_in_unwinder(ctx: *mut libc::c_void) -> bool {
    let (lo, hi) = (UNWINDER.0.load(Ordering::Relaxed), UNWINDER.1.load(Ordering::Relaxed));
    if ctx.is_null() || lo >= hi {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t as the third argument.
    let pc = unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] as usize };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    let pc = unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.pc as usize };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let pc = 0usize;
    (lo..hi).contains(&pc)
}

/// Samples every thread that is polling inside a scope, as fast as the signal round trip allows, until `target`
/// samples were taken or `timeout` passed; returns how many were taken. For the signal-safety stress test.
#[doc(hidden)]
pub fn stress_sample(target: usize, timeout: Duration) -> usize {
    if !HANDLER_INSTALLED.load(Ordering::Relaxed) {
        return 0;
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut taken = 0;
    // Pipelined: a thread is asked again as soon as its last answer was collected (or after 20 ms unanswered).
    let mut asked_at: HashMap<usize, std::time::Instant> = HashMap::new();
    while taken < target && std::time::Instant::now() < deadline {
        let slots: Vec<&'static Slot> = SLOTS.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for slot in slots {
            if slot.poll_start.load(Ordering::Acquire) == 0 || slot.free.load(Ordering::Acquire) {
                continue;
            }
            let key = std::ptr::from_ref(slot) as usize;
            let generation = slot.generation.load(Ordering::Relaxed);
            if slot.sample_state.load(Ordering::Acquire) == READY {
                if slot.sample_len.load(Ordering::Relaxed) > 0 {
                    taken += 1;
                }
                collect(slot, generation);
                slot.samples.lock().unwrap_or_else(PoisonError::into_inner).stacks.clear();
                asked_at.remove(&key);
            }
            let stale = asked_at.get(&key).is_none_or(|t| t.elapsed() > Duration::from_millis(20));
            if stale {
                slot.requested.store(generation, Ordering::Release);
                #[cfg(target_os = "linux")]
                sys::thread::signal_thread(slot.tid.load(Ordering::Relaxed), SAMPLE_SIGNAL);
                asked_at.insert(key, std::time::Instant::now());
            }
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    taken
}
