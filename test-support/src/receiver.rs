//! [`Receiver`]: a scripted webhook receiver for tests. A real HTTP/1.1 server
//! (hyper) listens on 127.0.0.1 on its own thread with its own tokio runtime, so
//! async actix tests and blocking tests use it alike. Each request is answered
//! with the next [`Reply`] of the script (the last one repeats) and recorded as a
//! [`Received`]. By default connections are not kept alive (`Connection: close`),
//! so every request is a fresh connection, as a slow or broken receiver would see
//! it; [`ReceiverBuilder`] turns on keep-alive, turns off recording and adds an
//! observer (the load-test harness counts arrivals that way without keeping bodies).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::wait::{eventually, eventually_blocking};

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// This status and body.
    Status(u16, &'static str),
    /// This status with a `Retry-After` header (seconds) and body `{}`.
    RetryAfter(u16, u64),
    /// Never answer (until the client gives up).
    Hang,
    /// Close the connection without answering.
    Reset,
    /// Answer 200 `{}` after this many milliseconds.
    Slow(u64),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request method (`POST`).
    pub method: String,
    /// Request target: path and query.
    pub path: String,
    /// Headers, names lower-cased (the last value wins when one repeats).
    pub headers: HashMap<String, String>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl Received {
    /// A header value (`""` when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The body as JSON; panics (failing the test) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("receiver got a JSON body")
    }
}

/// Called with each request as it arrives (before it is answered).
pub type Observer = Arc<dyn Fn(&Received) + Send + Sync>;

/// What the server thread shares with the test.
struct Log {
    hits: AtomicUsize,
    got: Mutex<Vec<Received>>,
    record: bool,
    keep_alive: bool,
    observer: Option<Observer>,
}

/// How a [`Receiver`] runs, for the rare caller that needs more than
/// [`Receiver::start`].
pub struct ReceiverBuilder {
    script: Vec<Reply>,
    keep_alive: bool,
    record: bool,
    observer: Option<Observer>,
}

impl ReceiverBuilder {
    /// Keeps connections alive between requests (default: `Connection: close`).
    pub fn keep_alive(mut self, keep_alive: bool) -> ReceiverBuilder {
        self.keep_alive = keep_alive;
        self
    }

    /// Whether requests are kept for [`Receiver::received`] (default: yes).
    /// [`Receiver::hits`] counts either way.
    pub fn record(mut self, record: bool) -> ReceiverBuilder {
        self.record = record;
        self
    }

    /// Calls `observer` with each request as it arrives.
    pub fn observe(
        mut self,
        observer: impl Fn(&Received) + Send + Sync + 'static,
    ) -> ReceiverBuilder {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Binds 127.0.0.1 on a free port and starts the server thread.
    pub fn start(self) -> std::io::Result<Receiver> {
        let script: Arc<[Reply]> = if self.script.is_empty() {
            Arc::from([Reply::Status(200, "{}")])
        } else {
            self.script.into()
        };
        let log = Arc::new(Log {
            hits: AtomicUsize::new(0),
            got: Mutex::new(Vec::new()),
            record: self.record,
            keep_alive: self.keep_alive,
            observer: self.observer,
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = log.clone();
        let thread = std::thread::Builder::new()
            .name("test-receiver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, shared, script) => {}
                    }
                });
            })?;
        Ok(Receiver {
            url: format!("http://{addr}/hook"),
            addr,
            log,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A running receiver; dropping it stops the server.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`: where to point webhooks.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    log: Arc<Log>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver answering from `script` (the last reply repeats; an
    /// empty script answers `200 {}`). Panics (failing the test) if it cannot bind.
    pub fn start(script: Vec<Reply>) -> Receiver {
        Receiver::builder(script)
            .start()
            .expect("start the test receiver")
    }

    /// A receiver answering from `script`, to configure before starting.
    pub fn builder(script: Vec<Reply>) -> ReceiverBuilder {
        ReceiverBuilder {
            script,
            keep_alive: false,
            record: true,
            observer: None,
        }
    }

    /// Stops the server and waits for its thread: no request is observed after.
    pub fn stop(mut self) {
        self.signal_stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.log
            .got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The bodies received so far.
    pub fn bodies(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.body).collect()
    }

    /// Requests answered or started so far.
    pub fn hits(&self) -> usize {
        self.log.hits.load(Ordering::SeqCst)
    }

    /// Waits (async) until `n` requests arrived, then returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(&format!("{n} requests at {}", self.url), || {
            self.count() >= n
        })
        .await;
        self.received()
    }

    /// Waits (blocking the thread) until `n` requests arrived, then returns them all.
    pub fn wait_for_blocking(&self, n: usize) -> Vec<Received> {
        eventually_blocking(&format!("{n} requests at {}", self.url), || {
            self.count() >= n
        });
        self.received()
    }

    fn count(&self) -> usize {
        self.log.got.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, log: Arc<Log>, script: Arc<[Reply]>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let keep_alive = log.keep_alive;
        let (log, script) = (log.clone(), script.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| answer(req, log.clone(), script.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(keep_alive)
                .serve_connection(TokioIo::new(sock), service)
                .await;
        });
    }
}

/// Why a request was not answered: [`Reply::Reset`]. hyper closes the
/// connection without writing a response when the service fails.
#[derive(Debug)]
struct ResetByScript;

impl std::fmt::Display for ResetByScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the script")
    }
}

impl std::error::Error for ResetByScript {}

async fn answer(
    req: Request<Incoming>,
    log: Arc<Log>,
    script: Arc<[Reply]>,
) -> Result<Response<Full<Bytes>>, ResetByScript> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).trim().to_string(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).to_string(),
        Err(_) => return Err(ResetByScript),
    };
    let received = Received {
        method,
        path,
        headers,
        body,
    };
    if let Some(observer) = &log.observer {
        observer(&received);
    }
    let n = log.hits.fetch_add(1, Ordering::SeqCst);
    if log.record {
        log.got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(received);
    }
    let (status, retry_after, body) = match script[n.min(script.len() - 1)] {
        Reply::Status(status, body) => (status, None, body),
        Reply::RetryAfter(status, secs) => (status, Some(secs), "{}"),
        Reply::Hang => {
            futures::future::pending::<()>().await;
            return Err(ResetByScript);
        }
        Reply::Reset => return Err(ResetByScript),
        Reply::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (200, None, "{}")
        }
    };
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(secs) = retry_after {
        resp = resp.header("retry-after", secs.to_string());
    }
    Ok(resp
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
