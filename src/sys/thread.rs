//! Threads: the OS thread id, signalling one thread, and what a thread is doing (`/proc`).

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

/// Sends `signal` to thread `tid` of this process.
#[cfg(target_os = "linux")]
pub(crate) fn signal_thread(tid: i32, signal: libc::c_int) -> bool {
    // SAFETY: tgkill only delivers a signal; our own process id and a thread id from a live slot.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signal) == 0 }
}

/// What the thread of a stuck poll is doing: `running`, or `blocked in syscall N (name)`.
pub(crate) fn thread_state(tid: i32) -> String {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
    let first = text.split_whitespace().next().unwrap_or("");
    match first.parse::<i64>() {
        Ok(n) => format!("blocked in syscall {n}{}", syscall_name(n).map(|s| format!(" ({s})")).unwrap_or_default()),
        Err(_) if first == "running" => "running".to_owned(),
        Err(_) => "in an unknown state".to_owned(),
    }
}

fn syscall_name(n: i64) -> Option<&'static str> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        Some(match n {
            0 => "read",
            1 => "write",
            7 => "poll",
            23 => "select",
            35 => "nanosleep",
            42 => "connect",
            43 => "accept",
            61 => "wait4",
            202 => "futex",
            230 => "clock_nanosleep",
            232 => "epoll_wait",
            _ => return None,
        })
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = n;
        None
    }
}
