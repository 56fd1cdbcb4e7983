//! Serves the notes app on 127.0.0.1 (port from `NOTES_PORT`, default 3000), with blockcop's layer active when
//! `RUST_TEST_BLOCKCOP=1`. The upstream webhook runs in the same process.

use tower_http::trace::TraceLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("info,blockcop=debug")).init();
    let upstream = notes::upstream::spawn().await?;
    let data = tempfile::tempdir()?;
    let config = notes::AppConfig::new(data.path(), format!("localhost:{}", upstream.port()));
    let app = notes::app(config)?.layer(blockcop::BlockCopLayer::from_env()?).layer(TraceLayer::new_for_http());
    let port: u16 = std::env::var("NOTES_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!("notes listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
