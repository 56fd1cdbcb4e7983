//! [`TestServer`]: an app served on loopback with [`BlockCopLayer`] applied, for [`TestClient`].

use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{Layer, Service};

use super::TestClient;
use crate::config::{Config, ConfigError};
use crate::layer::BlockCopLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP/1 server on `127.0.0.1:<ephemeral port>` serving a service with [`BlockCopLayer`] applied. It stops when
/// dropped.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    config: Config,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// Serves `service` (an `axum::Router`, or any tower service of hyper requests) with the layer configured from
    /// the environment.
    ///
    /// # Errors
    ///
    /// When a `BLOCKCOP_*` variable is malformed, or binding the loopback port fails.
    pub async fn spawn<S, B>(service: S) -> Result<TestServer, BoxError>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let config = Config::from_env().map_err(|e: ConfigError| Box::new(e) as BoxError)?;
        Ok(Self::spawn_with(service, config).await?)
    }

    /// Serves `service` with the layer configured by `config` (active iff it is enabled).
    ///
    /// # Errors
    ///
    /// When binding the loopback port fails.
    pub async fn spawn_with<S, B>(service: S, config: Config) -> std::io::Result<TestServer>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let service = BlockCopLayer::new(config.clone()).layer(service);
        let (tx, mut rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let service = TowerToHyperService::new(service.clone());
                        tokio::spawn(async move {
                            // With upgrades: a WebSocket route gets its upgraded connection.
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await;
                        });
                    }
                }
            }
        });
        Ok(TestServer { addr, config, shutdown: Some(tx) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The configuration of the server's layer.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A client for this server that checks responses by the server's configuration.
    pub fn client(&self) -> TestClient {
        TestClient::new(self.url(""), self.config.clone())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
