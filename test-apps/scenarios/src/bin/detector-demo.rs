//! Runs each scenario as an instrumented task on a multi-thread runtime and prints what blockcop saw.
//! `cargo xtask demo --detector` runs it.

use std::future::Future;
use std::time::Duration;

use blockcop::{Config, Scope};

fn show<F>(rt: &tokio::runtime::Runtime, config: &Config, name: &str, fut: F)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let scope = Scope::new(config);
    let task = scope.instrument(fut);
    rt.block_on(async move { tokio::spawn(task).await.expect("scenario task") });
    let v = scope.take_violations();
    let verdict = if v.is_empty() { "clean".to_owned() } else { format!("severity {} ({})", v.severity(), v.level()) };
    println!("{name:<34} {verdict}");
    for x in &v {
        println!("    {x}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let config = if config.is_enabled() {
        config
    } else {
        println!("(RUST_TEST_BLOCKCOP is not set: enabling blockcop for this demo)");
        Config::builder().enabled(true).slow_poll_threshold(config.slow_poll_threshold()).build()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("template.html");
    std::fs::write(&path, "<h1>{{title}}</h1>")?;

    println!("blocking scenarios:");
    show(&rt, &config, "std::thread::sleep", scenarios::sleep_in_backoff());
    show(&rt, &config, "ToSocketAddrs", scenarios::resolve_with_to_socket_addrs());
    let p = path.clone();
    show(&rt, &config, "std::fs::read_to_string", async move { scenarios::read_template(&p).await });
    let p = path.clone();
    show(&rt, &config, "std::fs::metadata", async move { scenarios::file_size(&p).await });
    show(&rt, &config, "std::process::Command", scenarios::run_program());
    show(&rt, &config, "CPU loop (40 ms)", scenarios::hash_inline(Duration::from_millis(40)));
    println!();
    println!("fixed twins:");
    show(&rt, &config, "tokio::time::sleep", scenarios::tokio_sleep());
    show(&rt, &config, "tokio::net::lookup_host", scenarios::tokio_lookup_host());
    let p = path.clone();
    show(&rt, &config, "tokio::fs", async move { scenarios::tokio_fs(&p).await });
    show(&rt, &config, "spawn_blocking", scenarios::spawn_blocking_work(path.clone()));
    Ok(())
}
