//! A real HTTP receiver for black-box tests: listens on 127.0.0.1 on its own thread,
//! answers each request from a script (status, Retry-After, hang, reset, slow) and
//! records what it got. Tests are blocking, so everything here is too.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// This status and body.
    Status(u16, &'static str),
    /// This status with a `Retry-After` header (seconds).
    RetryAfter(u16, u64),
    /// Never answer.
    Hang,
    /// Close the connection without answering.
    Reset,
    /// Answer 200 after this many milliseconds.
    Slow(u64),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: HashMap<String, String>,
    /// Raw body.
    pub body: String,
}

impl Received {
    /// A header value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("receiver got a JSON body")
    }
}

/// A running receiver; it stops with the test process.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    hits: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts a receiver answering from `script` (the last reply repeats).
    pub fn start(script: Vec<Reply>) -> Receiver {
        let (tx, rx) = std::sync::mpsc::channel();
        let hits = Arc::new(AtomicUsize::new(0));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (h, g) = (hits.clone(), got.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(serve(sock, h.clone(), g.clone(), script.clone()));
                }
            });
        });
        let addr = rx.recv().expect("receiver started");
        Receiver {
            url: format!("http://{addr}/hook"),
            hits,
            got,
        }
    }

    /// Requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Requests answered or started so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Waits (at most 10 s) until `n` requests arrived, then returns them all.
    pub fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.received().len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} requests at {}",
                self.url
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.received()
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    hits: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<Received>>>,
    script: Vec<Reply>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let received = loop {
        let Ok(k) = sock.read(&mut chunk).await else {
            return;
        };
        if k == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..k]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut lines = head.lines();
        let path = lines
            .next()
            .unwrap_or("")
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len = headers
            .get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            break Received {
                path,
                headers,
                body,
            };
        }
    };
    let n = hits.fetch_add(1, Ordering::SeqCst);
    got.lock().unwrap_or_else(|e| e.into_inner()).push(received);
    let (status, extra, body) = match script[n.min(script.len() - 1)] {
        Reply::Status(s, b) => (s, String::new(), b),
        Reply::RetryAfter(s, secs) => (s, format!("retry-after: {secs}\r\n"), "{}"),
        Reply::Hang => {
            futures::future::pending::<()>().await;
            return;
        }
        Reply::Reset => return,
        Reply::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (200, String::new(), "{}")
        }
    };
    let resp = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}
