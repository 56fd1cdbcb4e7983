//! An axum server on two worker threads with blockcop's layer from the environment, for the stress tests:
//! `stress-server <file>`. `GET /stat/<n>` calls `std::fs::metadata(<file>)` `n % 3` times (0 to 2 blocking
//! calls). Prints its base URL, then serves until killed.

use std::io::Write;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;

fn main() {
    let file = std::path::PathBuf::from(std::env::args().nth(1).expect("a file to stat"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let app = Router::new().route(
            "/stat/{n}",
            get(move |Path(n): Path<u32>| async move {
                let mut len = 0;
                for _ in 0..n % 3 {
                    len += std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                }
                len.to_string()
            }),
        );
        let server = blockcop::testing::TestServer::spawn(app).await.expect("serve");
        println!("{}", server.url(""));
        std::io::stdout().flush().expect("stdout");
        std::future::pending::<()>().await;
    });
}
