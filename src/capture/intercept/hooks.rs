//! The hooks: one `extern "C"` definition per catalogue function, each forwarding to libc's own.
//!
//! Rules every hook keeps:
//! - outside a scope it is one thread-local read and a call through a cached pointer;
//! - it never panics or unwinds: blockcop's work inside runs under `catch_unwind`;
//! - it preserves `errno` across blockcop's own work;
//! - it suspends detection while doing that work, so nothing blockcop calls is recorded (re-entrancy guard).
//!
//! Variadic functions (`open`, `openat`, `fcntl`, `syscall`) are defined with fixed integer arguments: on the
//! x86_64 SysV and aarch64 Linux ABIs a variadic caller passes them in the same registers.

// The hooks are `pub` as a reminder that they are exported: `#[no_mangle]` makes each symbol global whatever its
// Rust visibility.
#![allow(unreachable_pub)]

use std::ffi::{CStr, c_char, c_int, c_long, c_uint, c_void};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use libc::{mode_t, off_t, pid_t, size_t, sockaddr, socklen_t, ssize_t, timespec};

use super::{Detail, RawStack, thread};
use crate::catalogue::Weight;
use crate::catalogue::{self, Event};
use crate::clock;

/// libc's definition of a hooked function, looked up once with `dlsym(RTLD_NEXT, name)`.
struct Real {
    ptr: AtomicPtr<c_void>,
    name: &'static CStr,
}

impl Real {
    const fn new(name: &'static CStr) -> Real {
        Real { ptr: AtomicPtr::new(std::ptr::null_mut()), name }
    }

    #[inline(always)]
    fn get(&self) -> *mut c_void {
        let p = self.ptr.load(Ordering::Relaxed);
        if p.is_null() { self.resolve() } else { p }
    }

    #[cold]
    fn resolve(&self) -> *mut c_void {
        // SAFETY: `name` is a NUL-terminated C string; RTLD_NEXT asks for the next definition after this object's,
        // which is libc's.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        if p.is_null() {
            // Forwarding is impossible and there is no value to return that would be right; stop loudly rather
            // than call a null pointer. This does not unwind.
            let msg = b"blockcop: dlsym(RTLD_NEXT) found no libc definition of a hooked function\n";
            // SAFETY: a raw write(2) syscall of a static buffer to stderr; it bypasses the `write` hook.
            unsafe { libc::syscall(libc::SYS_write, 2, msg.as_ptr(), msg.len()) };
            std::process::abort();
        }
        self.ptr.store(p, Ordering::Relaxed);
        p
    }
}

/// Runs `call`; inside a scope, first asks `check` whether this call blocks (and for its detail), then times the
/// call and records a violation.
#[inline(always)]
fn intercept<R>(event: Event, check: impl FnOnce() -> Option<Detail>, call: impl FnOnce() -> R) -> R {
    if !thread::active() {
        return call();
    }
    intercept_in_scope(event, check, call, |_| true)
}

/// The recording path; `keep` decides from the result whether to record (a forked child must not).
#[cold]
#[inline(never)]
fn intercept_in_scope<R>(
    event: Event,
    check: impl FnOnce() -> Option<Detail>,
    call: impl FnOnce() -> R,
    keep: impl FnOnce(&R) -> bool,
) -> R {
    // A worker thread's scope under stable tokio is current between tasks too: only a task's calls count.
    if thread::between_tasks() {
        return call();
    }
    thread::suspended(|scope| {
        let Some(scope) = scope else { return call() };
        // blockcop's own work around the call (the check, the stack capture, the record) is left out of the poll's
        // slow-poll check with the call itself: on a poll of many recorded calls (nxv's synchronous SQLite search:
        // about 300 per request) it added milliseconds, and made slow polls of polls that were not.
        let overhead_start = clock::now();
        let Some(detail) = catch_unwind(AssertUnwindSafe(check)).ok().flatten() else {
            return call();
        };
        // The stack is taken before the call and published in the thread's watchdog slot, so that a report of
        // this poll as stuck while the call is in progress has it without interrupting the call.
        let stack = catch_unwind(RawStack::capture).unwrap_or(RawStack::EMPTY);
        let slot = thread::current_slot();
        if let Some(slot) = slot {
            let _ = catch_unwind(AssertUnwindSafe(|| slot.enter_call(&stack, thread::poll_context())));
        }
        let start = clock::now();
        let ret = call();
        let end = clock::now();
        let saved = errno();
        let stuck = slot.and_then(|slot| catch_unwind(AssertUnwindSafe(|| slot.leave_call())).ok().flatten());
        if !keep(&ret) {
            return ret;
        }
        let ns = clock::delta_ns(start, end);
        let _ = catch_unwind(AssertUnwindSafe(|| {
            scope.record_call(event, detail, Duration::from_nanos(ns), &stack, stuck);
        }));
        thread::exclude(clock::delta_ns(overhead_start, clock::now()));
        set_errno(saved);
        ret
    })
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

fn set_errno(v: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = v }
}

/// Defines hooks. Each `fn name(args) -> ret => check;` becomes an `extern "C" fn name` recording the catalogue
/// event `name` when `check` (an `Option<Detail>` expression that may use the arguments) is `Some`.
macro_rules! hooks {
    ($( fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty => $check:expr; )*) => {$(
        #[unsafe(no_mangle)]
        #[doc = concat!("blockcop's hook for libc's `", stringify!($name), "`.")]
        ///
        /// # Safety
        ///
        /// The same as libc's function of this name: the arguments are forwarded to it unchanged.
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            const EVENT: Event = catalogue::event(stringify!($name));
            static REAL: Real = Real::new(
                match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                    Ok(c) => c,
                    Err(_) => panic!("bad hook name"),
                },
            );
            // SAFETY: REAL holds libc's definition of this very function, whose C signature is this one.
            let real = unsafe {
                std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) -> $ret>(REAL.get())
            };
            #[allow(unused_unsafe, clippy::redundant_closure_call)]
            intercept(EVENT, || $check, || {
                // SAFETY: the caller's arguments, forwarded unchanged to libc's definition.
                unsafe { real($($arg),*) }
            })
        }
    )*};
}

/// libc's `fcntl`, for the O_NONBLOCK check (the hooked `fcntl` below records lock waits only).
static REAL_FCNTL: Real = Real::new(c"fcntl");

/// `Some(detail)` when `fd` is a blocking descriptor (no O_NONBLOCK); writes to stdout/stderr are trivial.
fn blocking_fd(fd: c_int) -> Option<Detail> {
    // SAFETY: libc's fcntl with F_GETFL takes no third argument and only reads the descriptor's flags.
    let flags = unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int, c_int, c_long) -> c_int>(REAL_FCNTL.get())(
            fd,
            libc::F_GETFL,
            0,
        )
    };
    if flags < 0 || flags & libc::O_NONBLOCK != 0 {
        return None;
    }
    Some(fd_detail(fd))
}

fn blocking_write(fd: c_int) -> Option<Detail> {
    let d = blocking_fd(fd)?;
    Some(if fd == 1 || fd == 2 { d.with_weight(Weight::Trivial) } else { d })
}

/// `fd 7 (/var/data/notes.json)`: the descriptor and what `/proc/self/fd/N` links to.
fn fd_detail(fd: c_int) -> Detail {
    let mut d = Detail::new();
    let _ = write!(d, "fd {fd}");
    let mut link = Detail::new();
    let _ = write!(link, "/proc/self/fd/{fd}\0");
    let mut target = [0u8; 112];
    // SAFETY: `link` holds a NUL-terminated path; readlink writes at most `target.len()` bytes into `target`.
    let n = unsafe { libc::readlink(link.as_str().as_ptr().cast(), target.as_mut_ptr().cast(), target.len()) };
    if let Ok(n) = usize::try_from(n) {
        let _ = write!(d, " ({})", String::from_utf8_lossy(&target[..n]));
    }
    d
}

fn path_detail(path: *const c_char) -> Detail {
    let mut d = Detail::new();
    if !path.is_null() {
        // SAFETY: libc requires path arguments to be valid NUL-terminated strings; the caller passed this one to
        // libc, which would read it the same way.
        let s = unsafe { CStr::from_ptr(path) };
        let _ = d.write_str(&s.to_string_lossy());
    }
    d
}

fn two_paths(a: *const c_char, b: *const c_char) -> Detail {
    let mut d = path_detail(a);
    let _ = write!(d, " -> {}", path_detail(b).as_str());
    d
}

fn sleep_detail(req: *const timespec) -> Detail {
    let mut d = Detail::new();
    if !req.is_null() {
        // SAFETY: the caller passes libc a valid timespec pointer.
        let ts = unsafe { *req };
        let dur = Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0));
        let _ = write!(d, "sleep {dur:?}");
    }
    d
}

fn host_detail(node: *const c_char, service: *const c_char) -> Detail {
    let mut d = path_detail(node);
    if !service.is_null() {
        let _ = write!(d, ":{}", path_detail(service).as_str());
    }
    d
}

fn sockaddr_detail(addr: *const sockaddr, len: socklen_t) -> Detail {
    let mut d = Detail::new();
    if addr.is_null() {
        return d;
    }
    let len = len as usize;
    // SAFETY: `addr` points to `len` bytes of a socket address (the libc contract); each branch reads only a
    // struct that fits in `len`, with unaligned reads.
    unsafe {
        match c_int::from((*addr).sa_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                let a = addr.cast::<libc::sockaddr_in>().read_unaligned();
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                let _ = write!(d, "{}", SocketAddrV4::new(ip, u16::from_be(a.sin_port)));
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                let a = addr.cast::<libc::sockaddr_in6>().read_unaligned();
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                let _ = write!(d, "{}", SocketAddrV6::new(ip, u16::from_be(a.sin6_port), 0, 0));
            }
            libc::AF_UNIX => {
                let base = size_of::<libc::sa_family_t>();
                let bytes = std::slice::from_raw_parts(addr.cast::<u8>().add(base), len.saturating_sub(base));
                let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                let _ = write!(d, "unix:{}", String::from_utf8_lossy(&bytes[..end]));
            }
            family => {
                let _ = write!(d, "address family {family}");
            }
        }
    }
    d
}

fn pid_detail(pid: pid_t) -> Detail {
    let mut d = Detail::new();
    let _ = write!(d, "pid {pid}");
    d
}

hooks! {
    // sleep
    fn clock_nanosleep(clock: libc::clockid_t, flags: c_int, req: *const timespec, rem: *mut timespec) -> c_int
        => Some(sleep_detail(req));
    fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int => Some(sleep_detail(req));
    fn usleep(usec: c_uint) -> c_int => {
        let mut d = Detail::new();
        let _ = write!(d, "sleep {:?}", Duration::from_micros(u64::from(usec)));
        Some(d)
    };
    fn sleep(secs: c_uint) -> c_uint => {
        let mut d = Detail::new();
        let _ = write!(d, "sleep {secs}s");
        Some(d)
    };

    // dns
    fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const c_void, res: *mut *mut c_void)
        -> c_int => Some(host_detail(node, service));
    fn getnameinfo(sa: *const sockaddr, salen: socklen_t, host: *mut c_char, hostlen: socklen_t,
        serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int
        => {
            let numeric = libc::NI_NUMERICHOST | libc::NI_NUMERICSERV;
            (flags & numeric != numeric).then(|| sockaddr_detail(sa, salen))
        };
    fn gethostbyname(name: *const c_char) -> *mut c_void => Some(path_detail(name));
    fn gethostbyname_r(name: *const c_char, ret: *mut c_void, buf: *mut c_char, buflen: size_t,
        result: *mut *mut c_void, h_errnop: *mut c_int) -> c_int => Some(path_detail(name));
    fn gethostbyname2(name: *const c_char, af: c_int) -> *mut c_void => Some(path_detail(name));
    fn gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut c_void, buf: *mut c_char, buflen: size_t,
        result: *mut *mut c_void, h_errnop: *mut c_int) -> c_int => Some(path_detail(name));
    fn gethostbyaddr(addr: *const c_void, len: socklen_t, ty: c_int) -> *mut c_void => Some(Detail::new());
    fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, ty: c_int, ret: *mut c_void, buf: *mut c_char,
        buflen: size_t, result: *mut *mut c_void, h_errnop: *mut c_int) -> c_int => Some(Detail::new());

    // net: only blocking sockets
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int
        => blocking_fd(fd).map(|_| sockaddr_detail(addr, len));
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int => blocking_fd(fd);
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int => blocking_fd(fd);

    // process
    fn posix_spawn(pid: *mut pid_t, path: *const c_char, actions: *const c_void, attr: *const c_void,
        argv: *const *mut c_char, envp: *const *mut c_char) -> c_int => Some(path_detail(path));
    fn posix_spawnp(pid: *mut pid_t, file: *const c_char, actions: *const c_void, attr: *const c_void,
        argv: *const *mut c_char, envp: *const *mut c_char) -> c_int => Some(path_detail(file));
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int
        => Some(path_detail(path));
    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int => Some(path_detail(file));
    fn system(command: *const c_char) -> c_int => Some(path_detail(command));
    fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t
        => (options & libc::WNOHANG == 0).then(|| pid_detail(pid));
    fn wait4(pid: pid_t, status: *mut c_int, options: c_int, rusage: *mut c_void) -> pid_t
        => (options & libc::WNOHANG == 0).then(|| pid_detail(pid));
    fn pthread_join(thread: libc::pthread_t, retval: *mut *mut c_void) -> c_int => Some(Detail::text("join thread"));

    // file
    fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int => Some(path_detail(path));
    fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int => Some(path_detail(path));
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int => Some(path_detail(path));
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int => Some(path_detail(path));
    fn creat(path: *const c_char, mode: mode_t) -> c_int => Some(path_detail(path));
    fn creat64(path: *const c_char, mode: mode_t) -> c_int => Some(path_detail(path));
    fn opendir(path: *const c_char) -> *mut c_void => Some(path_detail(path));
    fn rename(old: *const c_char, new: *const c_char) -> c_int => Some(two_paths(old, new));
    fn renameat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char) -> c_int
        => Some(two_paths(old, new));
    fn unlink(path: *const c_char) -> c_int => Some(path_detail(path));
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int => Some(path_detail(path));
    fn mkdir(path: *const c_char, mode: mode_t) -> c_int => Some(path_detail(path));
    fn mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int => Some(path_detail(path));
    fn rmdir(path: *const c_char) -> c_int => Some(path_detail(path));
    fn truncate(path: *const c_char, len: off_t) -> c_int => Some(path_detail(path));
    fn truncate64(path: *const c_char, len: libc::off64_t) -> c_int => Some(path_detail(path));
    fn fsync(fd: c_int) -> c_int => Some(fd_detail(fd));
    fn fdatasync(fd: c_int) -> c_int => Some(fd_detail(fd));

    // blocking fd I/O
    fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t => blocking_fd(fd);
    fn pread(fd: c_int, buf: *mut c_void, count: size_t, offset: off_t) -> ssize_t => blocking_fd(fd);
    fn pread64(fd: c_int, buf: *mut c_void, count: size_t, offset: libc::off64_t) -> ssize_t => blocking_fd(fd);
    fn readv(fd: c_int, iov: *const libc::iovec, iovcnt: c_int) -> ssize_t => blocking_fd(fd);
    fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t => blocking_write(fd);
    fn pwrite(fd: c_int, buf: *const c_void, count: size_t, offset: off_t) -> ssize_t => blocking_write(fd);
    fn pwrite64(fd: c_int, buf: *const c_void, count: size_t, offset: libc::off64_t) -> ssize_t
        => blocking_write(fd);
    fn writev(fd: c_int, iov: *const libc::iovec, iovcnt: c_int) -> ssize_t => blocking_write(fd);
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t
        => if flags & libc::MSG_DONTWAIT != 0 { None } else { blocking_fd(fd) };
    fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr,
        addrlen: *mut socklen_t) -> ssize_t
        => if flags & libc::MSG_DONTWAIT != 0 { None } else { blocking_fd(fd) };
    fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t
        => if flags & libc::MSG_DONTWAIT != 0 { None } else { blocking_fd(fd) };
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t
        => if flags & libc::MSG_DONTWAIT != 0 { None } else { blocking_fd(fd) };
    fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr,
        addrlen: socklen_t) -> ssize_t
        => if flags & libc::MSG_DONTWAIT != 0 { None } else { blocking_fd(fd) };
    fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> ssize_t
        => if flags & libc::MSG_DONTWAIT != 0 { None } else { blocking_fd(fd) };
    fn poll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int) -> c_int => (timeout != 0).then(|| {
        let mut d = Detail::new();
        let _ = write!(d, "{nfds} fds, timeout {timeout} ms");
        d
    });
    fn select(nfds: c_int, readfds: *mut libc::fd_set, writefds: *mut libc::fd_set, errorfds: *mut libc::fd_set,
        timeout: *mut libc::timeval) -> c_int
        => {
            // SAFETY: a non-null timeout is a valid timeval (the libc contract).
            let zero = !timeout.is_null() && unsafe { (*timeout).tv_sec == 0 && (*timeout).tv_usec == 0 };
            (!zero).then(|| Detail::text("select"))
        };

    // metadata
    fn stat(path: *const c_char, buf: *mut c_void) -> c_int => Some(path_detail(path));
    fn stat64(path: *const c_char, buf: *mut c_void) -> c_int => Some(path_detail(path));
    fn lstat(path: *const c_char, buf: *mut c_void) -> c_int => Some(path_detail(path));
    fn lstat64(path: *const c_char, buf: *mut c_void) -> c_int => Some(path_detail(path));
    fn fstat(fd: c_int, buf: *mut c_void) -> c_int => Some(fd_detail(fd));
    fn fstat64(fd: c_int, buf: *mut c_void) -> c_int => Some(fd_detail(fd));
    fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int
        => Some(path_detail(path));
    fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int
        => Some(path_detail(path));
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, buf: *mut c_void) -> c_int
        // SAFETY: a non-null `path` is the caller's NUL-terminated string (statx's contract): its first byte is
        // readable.
        => Some(if path.is_null() || unsafe { *path } == 0 { fd_detail(dirfd) } else { path_detail(path) });
    fn access(path: *const c_char, mode: c_int) -> c_int => Some(path_detail(path));
    fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int => Some(path_detail(path));

    // lock waits (futex waits are in `syscall` below)
    fn flock(fd: c_int, operation: c_int) -> c_int
        => if operation & libc::LOCK_NB != 0 || operation & libc::LOCK_UN != 0 { None } else { Some(fd_detail(fd)) };
}

/// `fcntl`: only `F_SETLKW` / `F_OFD_SETLKW` (waiting for a record lock) is recorded.
///
/// # Safety
///
/// The same as libc's `fcntl`: the arguments are forwarded unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    const EVENT: Event = catalogue::event("fcntl");
    // SAFETY: REAL_FCNTL holds libc's fcntl; the third argument is forwarded as the caller passed it.
    let real = unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int, c_int, c_long) -> c_int>(REAL_FCNTL.get())
    };
    intercept(
        EVENT,
        || matches!(cmd, libc::F_SETLKW | libc::F_OFD_SETLKW).then(|| fd_detail(fd)),
        // SAFETY: forwarded unchanged to libc's fcntl.
        || unsafe { real(fd, cmd, arg) },
    )
}

static REAL_FORK: Real = Real::new(c"fork");

/// `fork`: recorded in the parent only. The child has one thread and must not touch locks another thread of the
/// parent may have held at the fork.
///
/// # Safety
///
/// The same as libc's `fork`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork() -> pid_t {
    const EVENT: Event = catalogue::event("fork");
    // SAFETY: REAL_FORK holds libc's fork, which takes no arguments.
    let real = unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> pid_t>(REAL_FORK.get()) };
    // SAFETY: libc's fork, called as the caller would have.
    let call = || unsafe { real() };
    if !thread::active() {
        return call();
    }
    intercept_in_scope(EVENT, || Some(Detail::text("fork")), call, |pid| *pid != 0)
}

static REAL_SYSCALL: Real = Real::new(c"syscall");

const FUTEX_CMD_MASK: c_long = !(libc::FUTEX_PRIVATE_FLAG as c_long | libc::FUTEX_CLOCK_REALTIME as c_long);

/// `syscall`: records the futex waits behind std's `Mutex`, `Condvar`, `mpsc`, `thread::park` and parking_lot.
///
/// # Safety
///
/// The same as libc's `syscall`: the number and six argument registers are forwarded unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn syscall(
    number: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    const EVENT: Event = catalogue::event("futex");
    // SAFETY: REAL_SYSCALL holds libc's variadic syscall, which reads as many argument registers as the number
    // needs; passing six is how every variadic caller on this ABI passes them.
    let real = unsafe {
        std::mem::transmute::<
            *mut c_void,
            unsafe extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long,
        >(REAL_SYSCALL.get())
    };
    intercept(
        EVENT,
        || {
            let waits = [libc::FUTEX_WAIT, libc::FUTEX_WAIT_BITSET, libc::FUTEX_LOCK_PI, libc::FUTEX_WAIT_REQUEUE_PI];
            (number == libc::SYS_futex && waits.iter().any(|w| c_long::from(*w) == a2 & FUTEX_CMD_MASK))
                .then(|| Detail::text("futex wait"))
        },
        // SAFETY: forwarded unchanged to libc's syscall.
        || unsafe { real(number, a1, a2, a3, a4, a5, a6) },
    )
}
