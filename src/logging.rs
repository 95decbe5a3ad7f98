//! The daemon's stderr log: `RUST_LOG` filter (default `info`), text or JSON lines
//! (`[log] format`), written by a thread of its own.
//!
//! Every API request is logged at INFO (target `otpd::request`), so at the default
//! level the log is on the request path. Each line used to be written with its own
//! `write(2)` by the HTTP worker that served the request, and each woke whatever
//! reads the pipe (journald, a container runtime): over loopback that made the
//! daemon ~14 % slower than the same API without its log (`docs/benchmarks-passes.md`, "Fifth
//! pass"). Handing each line to a writer thread that wakes per line saves nothing,
//! so the `otpd-log` thread gathers: woken by a line, it waits [`LOG_GATHER`],
//! takes every line queued by then and writes them with as few `write(2)`s as
//! they fill [`WRITE_BUFFER_BYTES`]. A line reaches stderr at most [`LOG_GATHER`]
//! after it is logged, and under load the loggers only push onto a queue.
//!
//! The queue holds [`LOG_QUEUE_LINES`]. When it is full a thread that logs waits for
//! room, as it waited on a blocked stderr before: no line is dropped. The lines
//! still queued are written when the [`LogGuard`] drops (the end of `main`); a
//! `kill -9` loses the lines of the last [`LOG_GATHER`] at most.

use std::io::{BufWriter, IsTerminal as _, Write};
use std::sync::mpsc;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Lines the log queue holds before a thread that logs waits for the writer.
pub const LOG_QUEUE_LINES: usize = 16_384;

/// How long the writer thread, woken by a line, waits for more before it writes.
pub const LOG_GATHER: Duration = Duration::from_millis(2);

/// The writer thread's buffer: lines gathered past this size are written at once.
pub const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// What the writer thread receives.
enum Msg {
    /// One formatted line (or several, as one event's bytes).
    Line(Vec<u8>),
    /// Write out everything before this message, then answer.
    Flush(mpsc::Sender<()>),
}

/// The subscriber's side of the queue: each event's bytes become one message.
struct Queue {
    tx: mpsc::SyncSender<Msg>,
}

/// One event being written: its bytes are sent when the formatter drops it.
struct QueuedLine<'a> {
    tx: &'a mpsc::SyncSender<Msg>,
    bytes: Vec<u8>,
}

impl Write for QueuedLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine<'_> {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            // Fails only if the writer thread is gone (it never returns while the
            // subscriber holds its queue): the line then goes straight to stderr.
            if let Err(mpsc::SendError(Msg::Line(bytes))) =
                self.tx.send(Msg::Line(std::mem::take(&mut self.bytes)))
            {
                let _ = std::io::stderr().write_all(&bytes);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = QueuedLine<'a>;

    fn make_writer(&'a self) -> QueuedLine<'a> {
        QueuedLine {
            tx: &self.tx,
            bytes: Vec::new(),
        }
    }
}

/// The writer thread: waits for a line, gathers for [`LOG_GATHER`], writes.
fn write_lines(rx: mpsc::Receiver<Msg>, out: impl Write) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, out);
    while let Ok(first) = rx.recv() {
        let gather = matches!(first, Msg::Line(_));
        write_one(first, &mut out);
        if gather {
            std::thread::sleep(LOG_GATHER);
        }
        while let Ok(msg) = rx.try_recv() {
            write_one(msg, &mut out);
        }
        let _ = out.flush();
    }
}

/// Buffers a line, or answers a flush once everything before it is written.
fn write_one(msg: Msg, out: &mut impl Write) {
    match msg {
        Msg::Line(bytes) => {
            let _ = out.write_all(&bytes);
        }
        Msg::Flush(done) => {
            let _ = out.flush();
            let _ = done.send(());
        }
    }
}

/// The log's queue, held until the process ends; dropping it writes out what is
/// still queued.
#[must_use = "dropping the guard writes out the log and stops waiting for it"]
pub struct LogGuard {
    tx: mpsc::SyncSender<Msg>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let (done, flushed) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = flushed.recv_timeout(Duration::from_secs(2));
        }
    }
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Installs the process's log: stderr, `RUST_LOG` filter, default `info`; text
/// (colours only on a terminal) or JSON lines.
///
/// A malformed HTTP request (a client's mistake, answered 400 by actix before any
/// route or authentication) is not an error of otpd's: actix-http logs it at ERROR,
/// [`ProtocolErrors`] turns that into a debug line and a count in
/// `otpd_http_protocol_errors_total`.
///
/// If the process already has a global subscriber (an embedding application's),
/// that one stays and this one is not installed. If the writer thread cannot be
/// started, lines are written to stderr directly, as they are logged.
pub fn init(format: LogFormat) -> Option<LogGuard> {
    let (tx, rx) = mpsc::sync_channel(LOG_QUEUE_LINES);
    let thread = std::thread::Builder::new()
        .name("otpd-log".into())
        .spawn(move || write_lines(rx, std::io::stderr()));
    match thread {
        Ok(_) => {
            install(format, Queue { tx: tx.clone() });
            Some(LogGuard { tx })
        }
        Err(_) => {
            install(format, std::io::stderr);
            None
        }
    }
}

/// Installs the global subscriber, writing through `writer`.
fn install<W>(format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(ProtocolErrors)
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(ProtocolErrors)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

/// The `log` target actix-http's HTTP/1 dispatcher writes its per-connection
/// "stream error: request parse error: …" lines under.
const H1_DISPATCHER: &str = "actix_http::h1::dispatcher";

/// A per-layer filter for the stderr log: drops actix-http's ERROR line for a
/// malformed request, counts it and logs it again at debug.
struct ProtocolErrors;

/// Collects the `message` and `log.target` fields of an event.
#[derive(Default)]
struct LogFields {
    message: String,
    target: String,
}

impl tracing::field::Visit for LogFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "log.target" => self.target = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for ProtocolErrors {
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        if *event.metadata().level() != tracing::Level::ERROR {
            return true;
        }
        let mut fields = LogFields::default();
        event.record(&mut fields);
        let target = if fields.target.is_empty() {
            event.metadata().target()
        } else {
            fields.target.as_str()
        };
        if target != H1_DISPATCHER || !fields.message.contains("parse error") {
            return true;
        }
        metrics::counter!("otpd_http_protocol_errors_total").increment(1);
        tracing::debug!(error = %fields.message, "malformed HTTP request refused");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    /// A sink that keeps what is written and counts the `write` calls.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().expect("sink").extend_from_slice(buf);
            *self.writes.lock().expect("sink") += 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A writer thread over `sink`, and the subscriber's side of its queue.
    fn writer(sink: &Sink) -> (Queue, JoinHandle<()>) {
        let (tx, rx) = mpsc::sync_channel(LOG_QUEUE_LINES);
        let out = sink.clone();
        let thread = std::thread::spawn(move || write_lines(rx, out));
        (Queue { tx }, thread)
    }

    /// Asks the writer thread to write out what it has, and waits for it.
    fn flush(queue: &Queue) {
        let (done, flushed) = mpsc::channel();
        queue.tx.send(Msg::Flush(done)).expect("writer thread");
        flushed
            .recv_timeout(Duration::from_secs(10))
            .expect("flushed");
    }

    /// Writes `line` as the formatter does: one writer per event, dropped after.
    fn log(queue: &Queue, line: &str) {
        let mut w = queue.make_writer();
        w.write_all(line.as_bytes()).expect("queued");
    }

    #[test]
    fn a_burst_of_lines_is_written_in_order_with_few_writes() {
        let sink = Sink::default();
        let (queue, thread) = writer(&sink);
        let lines: Vec<String> = (0..2_000).map(|i| format!("line {i}\n")).collect();
        for line in &lines {
            log(&queue, line);
        }
        flush(&queue);
        let written = String::from_utf8(sink.bytes.lock().expect("sink").clone()).expect("utf-8");
        assert_eq!(written, lines.concat());
        // 2,000 lines of ~10 bytes: a handful of gathers, each one or two writes,
        // where writing per line made 2,000.
        let writes = *sink.writes.lock().expect("sink");
        assert!(writes <= 50, "{writes} writes for 2,000 lines");
        drop(queue);
        thread.join().expect("writer thread ends with its queue");
    }

    #[test]
    fn a_lone_line_reaches_the_sink_without_a_flush() {
        let sink = Sink::default();
        let (queue, _thread) = writer(&sink);
        log(&queue, "alone\n");
        let arrived = otpd_test_support::poll_blocking(Duration::from_secs(10), || {
            !sink.bytes.lock().expect("sink").is_empty()
        });
        assert!(arrived, "the line never arrived");
        assert_eq!(&*sink.bytes.lock().expect("sink"), b"alone\n");
    }

    #[test]
    fn an_event_written_in_pieces_stays_one_line() {
        let sink = Sink::default();
        let (queue, _thread) = writer(&sink);
        {
            let mut w = queue.make_writer();
            w.write_all(b"first half, ").expect("queued");
            w.write_all(b"second half\n").expect("queued");
        }
        log(&queue, "next\n");
        flush(&queue);
        assert_eq!(
            &*sink.bytes.lock().expect("sink"),
            b"first half, second half\nnext\n"
        );
    }
}
