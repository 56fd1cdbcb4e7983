//! Busy loops, as on a shared CI runner. Dependency-free, so that `xtask` includes this same file.

/// Busy loops beside the tests or a driven service, as on a shared CI runner: `per_core` spinning threads per
/// core, until dropped.
pub struct BusyLoops {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyLoops {
    pub fn start(per_core: usize) -> BusyLoops {
        use std::sync::atomic::{AtomicBool, Ordering};
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let threads = (0..cores * per_core)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
            })
            .collect();
        BusyLoops { stop, threads }
    }

    /// How many loops are spinning.
    pub fn count(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
