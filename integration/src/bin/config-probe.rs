//! Reads blockcop's configuration from the environment at start-up, as a service's `main` does, for the
//! configuration tests. With no argument: prints `enabled=<bool>` and returns `blockcop::init()`'s error through
//! `?`. With `layer-or-panic`: builds the layer in a function that returns a router, with
//! `BlockCopLayer::from_env_or_panic()`. With `layer-io`: builds it with `?` in a function returning `io::Result`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        Some("layer-or-panic") => {
            let _app = app();
            println!("layer built");
        }
        Some("layer-io") => layer_io()?,
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
