//! First versus later flagged request on a large debug binary: what symbolizing the first violation costs the
//! request that has it.
//!
//! `first_request [at-start|after-warm-up]`: starts an axum server with an enabled `BlockCopLayer` (which starts
//! loading debug info in the background), then times five requests to a handler that reads a file with
//! `std::fs::read` (a flagged call, symbolized for the response's header). `at-start` sends them as soon as the
//! server listens; `after-warm-up` waits for `blockcop::warmed_up()` first. Built with the dev profile by
//! `cargo xtask bench`, so the binary is a debug build of this crate's dev-dependencies (~150 MB).

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use blockcop::{BlockCopLayer, Config};

fn main() {
    // `cargo bench` adds `--bench`; the mode is the argument that is not an option.
    let mode = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or_else(|| "at-start".to_owned());
    let after_warm_up = match mode.as_str() {
        "at-start" => false,
        "after-warm-up" => true,
        other => {
            eprintln!("first_request: unknown mode {other:?} (accepted: at-start, after-warm-up)");
            std::process::exit(2);
        }
    };
    let size = std::env::current_exe().and_then(std::fs::metadata).map_or(0, |m| m.len());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("page.html");
    std::fs::write(&file, "<html></html>").expect("write");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let started = Instant::now();
        let layer = BlockCopLayer::new(Config::builder().enabled(true).build());
        let app = Router::new()
            .route("/page", get(move || async move { std::fs::read(&file).map_or(0, |b| b.len()).to_string() }))
            .layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        if after_warm_up {
            while !blockcop::warmed_up() {
                assert!(started.elapsed() < Duration::from_secs(60), "warm-up did not finish");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            println!("warm-up finished {:.0} ms after the layer was made", started.elapsed().as_secs_f64() * 1e3);
        }
        let client = reqwest::Client::new();
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let res = client.get(format!("http://{addr}/page")).send().await.expect("request");
            assert!(res.headers().contains_key("x-blocking-violations"), "the read was not flagged");
            res.bytes().await.expect("body");
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
        println!(
            "{mode}: {:.0} MB binary; flagged requests took {} ms (first {:.1} ms over the second)",
            size as f64 / 1e6,
            shown.join(", "),
            times[0] - times[1]
        );
    });
}
