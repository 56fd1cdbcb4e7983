//! Reads blockcop's configuration from the environment at start-up, as a service's `main` does, for the
//! configuration tests: prints `enabled=<bool>` and returns `blockcop::init()`'s error through `?`.

fn main() -> Result<(), blockcop::ConfigError> {
    let config = blockcop::init()?;
    println!("enabled={}", config.is_enabled());
    Ok(())
}
