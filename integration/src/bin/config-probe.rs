//! Reads blockcop's configuration from the environment at start-up, as a service's `main` does, for the
//! configuration tests. With no argument: prints `enabled=<bool>` and returns `blockcop::init()`'s error through
//! `?`. With `layer-or-panic`: builds the layer in a function that returns a router, with
//! `BlockCopLayer::from_env_or_panic()`. With `layer-io`: builds it with `?` in a function returning `io::Result`.
//! With `allowlisted <file>`: stats `file` in a scope from `startup_stat` (for an allowlist file to allow) and prints
//! how many violations the scope kept. With `test-body`: runs a test body that sleeps, through `blockcop::test::run`
//! (which fails it, unless the baseline knows the sleep).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        Some("layer-or-panic") => {
            let _app = app();
            println!("layer built");
        }
        Some("layer-io") => layer_io()?,
        Some("test-body") => {
            blockcop::test::run(async { body_sleep() });
            println!("test body passed");
        }
        Some("allowlisted") => {
            let path = std::env::args().nth(2).ok_or("allowlisted: a file to stat")?;
            let scope = blockcop::Scope::new(blockcop::init()?);
            scope.in_scope(|| startup_stat(std::path::Path::new(&path)));
            println!("violations={}", scope.take_violations().list.len());
        }
        _ => {
            let config = blockcop::init()?;
            println!("enabled={}", config.is_enabled());
        }
    }
    Ok(())
}

fn app() -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(|| async { "hi" }))
        .layer(blockcop::BlockCopLayer::from_env_or_panic())
}

fn layer_io() -> std::io::Result<()> {
    let layer = blockcop::BlockCopLayer::from_env()?;
    println!("active={}", layer.is_active());
    Ok(())
}

#[inline(never)]
fn body_sleep() {
    std::thread::sleep(std::time::Duration::from_millis(1));
}

#[inline(never)]
fn startup_stat(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
