//! A bare HTTP/1.1 keep-alive client: one hyper connection per `Conn`, reconnected when the
//! server closes it. Each load worker owns its connections, like wrk, so the generator spends
//! no time in a shared pool and its cost stays small next to the server's.

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Longest one request may take before the generator gives up on it (counted as "other").
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Where requests go: an `http://host:port` base, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` for the Host header.
    pub authority: String,
}

impl Target {
    /// Parses `http://host:port` (no TLS: the generator loads servers on a trusted network).
    pub fn parse(base: &str) -> Result<Self> {
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--target must start with http:// (got {base})"))?;
        let authority = rest.trim_end_matches('/').to_owned();
        use std::net::ToSocketAddrs;
        let addr = authority
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to no address"))?;
        Ok(Self { addr, authority })
    }
}

/// One answer: status and the whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "answer {} is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One keep-alive connection, opened on first use and again after the server closed it.
pub struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.target.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.target.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            // The connection ends when the server closes it; the next request reconnects.
            let _ = connection.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// Sends one request. `headers` are name/value pairs; `body` is sent as JSON if given.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Answer> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.target.authority);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder.body(Full::new(body.unwrap_or_default()))?;
        let fut = self.round_trip(request);
        match tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), fut).await {
            Ok(answer) => answer,
            Err(_) => {
                // A late answer would land on the next request: drop the connection.
                self.sender = None;
                Err(anyhow!("no answer within {REQUEST_TIMEOUT_MS} ms"))
            }
        }
    }

    async fn round_trip(&mut self, request: Request<Full<Bytes>>) -> Result<Answer> {
        let reusable = match &mut self.sender {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        let sender = if reusable {
            self.sender
                .as_mut()
                .ok_or_else(|| anyhow!("no connection"))?
        } else {
            self.connect().await?
        };
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => {
                self.sender = None;
                return Err(error.into());
            }
        };
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) => {
                self.sender = None;
                return Err(error.into());
            }
        };
        Ok(Answer { status, body })
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Answer> {
        self.send(Method::GET, path, headers, None).await
    }

    pub async fn post_json(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<Answer> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        self.send(Method::POST, path, headers, Some(body)).await
    }
}

/// Keep-alive connections to one node shared by many tasks (the waiting-room crowd, where
/// each buyer is a task of its own that sleeps between polls): at most `size` requests in
/// flight, each on a connection of its own, which is kept for the next request.
pub struct Pool {
    target: Target,
    permits: tokio::sync::Semaphore,
    /// Connections not in use. A std mutex: held only to push or pop, never across `.await`.
    idle: std::sync::Mutex<Vec<Conn>>,
}

impl Pool {
    pub fn new(target: Target, size: usize) -> Self {
        assert!(size > 0, "a pool needs at least one connection");
        Self {
            target,
            permits: tokio::sync::Semaphore::new(size),
            idle: std::sync::Mutex::new(Vec::with_capacity(size)),
        }
    }

    /// Sends one request on a free connection, waiting for one if all are busy.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Answer> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| anyhow!("the connection pool is closed"))?;
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = taken.unwrap_or_else(|| Conn::new(self.target.clone()));
        let answer = conn.send(method, path, headers, body).await;
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        answer
    }
}
