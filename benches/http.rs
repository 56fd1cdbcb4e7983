//! HTTP overhead of the layer: an axum hello-world on loopback under concurrent keep-alive load, served (a) with
//! no layer, (b) with `BlockCopLayer` present but disabled, (c) with it enabled; and the same 12 bytes as a streamed
//! body of three frames (`Body::from_stream`), (d) with no layer and (e) with it enabled, whose every frame is polled
//! in the request's scope. The servers run side by side and the load runs interleaved (the order rotating each
//! round), several rounds; requests/s are medians, ratios medians of per-round ratios.
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
    Router::new().route("/", get(|| async { "hello, world" })).route(
        "/stream",
        get(|| async {
            let frames =
                ["hell", "o, w", "orld"].map(|s| Ok::<_, std::convert::Infallible>(Bytes::from_static(s.as_bytes())));
            axum::body::Body::from_stream(futures_util::stream::iter(frames))
        }),
    )
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

async fn load(addr: SocketAddr, path: &'static str, duration: Duration) -> f64 {
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
                let req = http::Request::get(path).header("host", "bench").body(Empty::<Bytes>::new()).expect("req");
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
    // (server, path) of each variant: a, b, c, d, e.
    let variants = [(0, "/"), (1, "/"), (2, "/"), (0, "/stream"), (2, "/stream")];
    let mut rps: [Vec<f64>; 5] = Default::default();
    rt.block_on(async {
        for (server, path) in variants {
            load(addrs[server], path, Duration::from_millis(300)).await;
        }
        for round in 0..ROUNDS {
            // Rotate the order so that no variant always runs first or last in a round.
            for k in 0..variants.len() {
                let i = (round + k) % variants.len();
                let (server, path) = variants[i];
                rps[i].push(load(addrs[server], path, ROUND).await);
            }
        }
    });
    let ratio = |i: usize, of: usize| median(rps[i].iter().zip(&rps[of]).map(|(x, a)| x / a).collect());
    let (b_a, c_a, e_d) = (ratio(1, 0), ratio(2, 0), ratio(4, 3));
    let m: Vec<f64> = rps.into_iter().map(median).collect();
    println!("  (a) no layer                 {:>10.0} req/s", m[0]);
    println!("  (b) layer, blockcop disabled {:>10.0} req/s   b/a = {b_a:.4}  (budget >= 0.995)", m[1]);
    println!("  (c) layer, blockcop enabled  {:>10.0} req/s   c/a = {c_a:.4}  (budget >= 0.97)", m[2]);
    println!("  (d) streamed body, no layer  {:>10.0} req/s", m[3]);
    println!("  (e) streamed body, enabled   {:>10.0} req/s   e/d = {e_d:.4}  (budget >= 0.97)", m[4]);
}
