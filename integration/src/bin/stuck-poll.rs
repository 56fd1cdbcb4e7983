//! A poll that stays stuck sleeping for `<seconds>`, in a process that has just started (its debug
//! info not loaded yet), for the stuck-poll timing test: `stuck-poll <seconds>`. Reads its configuration from the
//! environment; prints `polling` when the poll begins.

use std::io::Write;
use std::time::Duration;

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).expect("seconds");
    let config = blockcop::Config::from_env().expect("configuration");
    let scope = blockcop::Scope::new(&config);
    println!("polling");
    std::io::stdout().flush().expect("stdout");
    scope.in_scope(|| std::thread::sleep(Duration::from_secs(seconds)));
}
