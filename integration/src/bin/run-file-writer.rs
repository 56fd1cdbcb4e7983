//! Writes violations to this process's run file from many threads at once, for the run-file concurrency test:
//! `run-file-writer <threads> <scopes per thread> <file to stat> [thread name]`. Half the scopes are taken, half
//! dropped untaken (their violations must reach the run file anyway). Thread `t` is named `writer_<t>` (as libtest
//! would name a test), or `thread name` when given.

use blockcop::{Config, Scope};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|a| a.parse().ok()).expect("threads");
    let scopes: usize = args.get(2).and_then(|a| a.parse().ok()).expect("scopes per thread");
    let file = std::path::PathBuf::from(args.get(3).expect("a file to stat"));
    let thread_name = args.get(4).cloned();
    let config = Config::builder().enabled(true).build();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (config, file) = (config.clone(), file.clone());
            std::thread::Builder::new()
                .name(thread_name.clone().unwrap_or_else(|| format!("writer_{t}")))
                .spawn(move || {
                    for i in 0..scopes {
                        let scope = Scope::new(&config);
                        scope.in_scope(|| std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0));
                        if i % 2 == 0 {
                            // A preempted thread may add a slow poll; the stat is always there.
                            assert!(scope.take_violations().iter().any(|v| v.event == "statx"));
                        }
                    }
                })
                .expect("spawn writer thread")
        })
        .collect();
    for w in workers {
        w.join().expect("writer thread");
    }
}
