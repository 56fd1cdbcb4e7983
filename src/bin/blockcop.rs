//! `blockcop report`: see [`blockcop::report::cli`].

fn main() -> std::process::ExitCode {
    let status = blockcop::report::cli::run(std::env::args(), &mut std::io::stdout(), &mut std::io::stderr());
    std::process::ExitCode::from(status)
}
