//! HTTP overhead of the layer: an axum hello-world on loopback under concurrent keep-alive load, served (a) with
//! no layer, (b) with `BlockCopLayer` present but disabled, (c) with it enabled. The three servers run side by
//! side and the load runs interleaved (the order rotating each round), several rounds; requests/s are medians, ratios medians of per-round ratios.
//! Run with `cargo bench --bench http` or `cargo xtask bench`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use blockcop::{BlockCopLayer, Config};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

const CONNECTIONS: usize = 32;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 9;

fn hello() -> Router {
    Router::new().route("/", get(|| async { "hello, world" }))
}

/// Serves `app` on a current-thread runtime in its own OS thread (one core for the servers, one for the load).
fn serve(apps: Vec<Router>) -> Vec<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("server runtime");
        rt.block_on(async move {
            for app in apps {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("send addr");
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
            std::future::pending::<()>().await;
        });
    });
    (0..3).map(|_| rx.recv().expect("server address")).collect()
}

async fn load(addr: SocketAddr, duration: Duration) -> f64 {
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (done, count) = (done.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
            tokio::spawn(conn);
            while !done.load(Ordering::Relaxed) {
                let req = http::Request::get("/").header("host", "bench").body(Empty::<Bytes>::new()).expect("req");
                let res = send.send_request(req).await.expect("response");
                let body = res.into_body().collect().await.expect("body");
                assert_eq!(body.to_bytes().len(), 12);
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    let n = count.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    n as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let enabled = Config::builder().enabled(true).build();
    let addrs = serve(vec![
        hello(),
        hello().layer(BlockCopLayer::new(Config::default())),
        hello().layer(BlockCopLayer::new(enabled)),
    ]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("load runtime");
    println!(
        "HTTP benchmark: axum hello-world on loopback, {CONNECTIONS} keep-alive connections, {ROUNDS} interleaved \
         rounds of {ROUND:?}"
    );
    let mut rps: [Vec<f64>; 3] = Default::default();
    rt.block_on(async {
        for addr in &addrs {
            load(*addr, Duration::from_millis(300)).await;
        }
        for round in 0..ROUNDS {
            // Rotate the order so that no variant always runs first or last in a round.
            for k in 0..addrs.len() {
                let i = (round + k) % addrs.len();
                rps[i].push(load(addrs[i], ROUND).await);
            }
        }
    });
    let ratio = |i: usize| median(rps[i].iter().zip(&rps[0]).map(|(x, a)| x / a).collect());
    let (b_a, c_a) = (ratio(1), ratio(2));
    let m: Vec<f64> = rps.into_iter().map(median).collect();
    println!("  (a) no layer                 {:>10.0} req/s", m[0]);
    println!("  (b) layer, blockcop disabled {:>10.0} req/s   b/a = {b_a:.4}  (budget >= 0.995)", m[1]);
    println!("  (c) layer, blockcop enabled  {:>10.0} req/s   c/a = {c_a:.4}  (budget >= 0.97)", m[2]);
}
