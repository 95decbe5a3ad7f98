//! Cycle mode driving: the shared plan, one driver task (request → code
//! hand-over → verify) and the driver threads.

use super::*;

/// Shared by every driver task.
pub(crate) struct Plan {
    pub(crate) runtime: Runtime,
    pub(crate) provider: Arc<HandoffProvider>,
    pub(crate) apps: Vec<Arc<App>>,
    pub(crate) phones: Arc<Vec<String>>,
    pub(crate) deadline: Instant,
    /// Cycles not yet claimed (`u64::MAX` = unlimited).
    pub(crate) budget: AtomicU64,
    /// Hold mode: request only, each phone once.
    pub(crate) hold: bool,
    /// Delivery mode with the callbacks driver: where verifies send their callback.
    pub(crate) callbacks: Option<Arc<Callbacks>>,
    /// When driving started: the origin of the completion timeline.
    pub(crate) started: Instant,
    /// `--rate`: the fixed schedule cycles start on (open loop); `None` = closed loop.
    pub(crate) pace: Option<Pace>,
    /// `--actors local`: the driver threads host the OTP actors they first call.
    pub(crate) local_actors: bool,
}

/// How late a start may be before it counts as late: tokio's timers have 1 ms
/// granularity, so a start up to 2 ms after its slot is on time.
pub(crate) const LATE_AFTER: Duration = Duration::from_millis(2);

/// The open-loop schedule of `--rate N`: slot k starts at `origin + k / N`, whoever
/// is free takes the next slot, and a cycle's latency counts from its slot, not from
/// when a driver got to it (so a slow server cannot hide behind a slow client).
pub(crate) struct Pace {
    pub(crate) origin: Instant,
    pub(crate) interval: Duration,
    pub(crate) next: AtomicU64,
    /// Slots that started more than [`LATE_AFTER`] behind schedule because every
    /// driver task was busy (the in-flight cap, `--concurrency`, was reached).
    pub(crate) late: AtomicU64,
    pub(crate) target_per_sec: f64,
}

impl Pace {
    pub(crate) fn new(per_sec: f64, origin: Instant) -> Pace {
        Pace {
            origin,
            interval: Duration::from_secs_f64(1.0 / per_sec),
            next: AtomicU64::new(0),
            late: AtomicU64::new(0),
            target_per_sec: per_sec,
        }
    }

    /// Takes the next slot, waits for its time, and returns it (the cycle's start).
    pub(crate) async fn turn(&self) -> Instant {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = self.origin + self.interval.mul_f64(k as f64);
        let now = Instant::now();
        if slot > now {
            tokio::time::sleep_until(slot.into()).await;
        } else if now - slot > LATE_AFTER {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        slot
    }
}

impl Plan {
    /// When a cycle starts: now (closed loop), or its slot on the `--rate` schedule.
    pub(crate) async fn start_cycle(&self) -> Instant {
        match &self.pace {
            Some(pace) => pace.turn().await,
            None => Instant::now(),
        }
    }
}

/// The callback side of delivery mode: endpoint URLs, and when each verify returned.
pub(crate) struct Callbacks {
    pub(crate) urls: Vec<String>,
    /// Correlation key (flake id or delivery id) → when the driver's call returned.
    pub(crate) returned: Mutex<HashMap<String, Instant>>,
}

impl Plan {
    pub(crate) fn claim(&self) -> bool {
        if !self.hold && Instant::now() >= self.deadline {
            return false;
        }
        self.budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1))
            .is_ok()
    }
}

/// One driver task: phones `task, task + C, task + 2C, …`, in a loop.
/// Records into its thread's `tally` (never borrowed across an await).
pub(crate) async fn drive(plan: Arc<Plan>, task: usize, tasks: usize, tally: Rc<RefCell<Tally>>) {
    let mine: Vec<usize> = (task..plan.phones.len()).step_by(tasks).collect();
    if mine.is_empty() {
        return;
    }
    let mut next = 0usize;
    loop {
        if plan.hold && next == mine.len() {
            break;
        }
        if !plan.claim() {
            break;
        }
        let i = mine[next % mine.len()];
        next += 1;
        let app = &plan.apps[i % plan.apps.len()];
        let phone = &plan.phones[i];
        let started = plan.start_cycle().await;
        let send = SendOtp {
            phone_number: phone.clone(),
            ..SendOtp::default()
        };
        let issued = match tokio::time::timeout(CALL_TIMEOUT, plan.runtime.request(app, send)).await
        {
            Ok(Ok(issued)) => issued,
            Ok(Err(e)) => {
                tally.borrow_mut().error(format!("request_{}", e.code()));
                continue;
            }
            Err(_) => {
                tally.borrow_mut().error("request_timeout");
                continue;
            }
        };
        let requested = Instant::now();
        let _ = tally
            .borrow_mut()
            .request
            .record(micros(requested - started));
        if plan.hold {
            let mut t = tally.borrow_mut();
            t.cycles += 1;
            t.completed_at(requested - plan.started);
            continue;
        }
        let Some(message_id) = issued.message_id else {
            tally.borrow_mut().error("request_without_message");
            continue;
        };
        let Some(code) = plan.provider.code_for(message_id, CALL_TIMEOUT).await else {
            tally.borrow_mut().error("code_timeout");
            continue;
        };
        let coded = Instant::now();
        let _ = tally
            .borrow_mut()
            .code_wait
            .record(micros(coded - requested));
        let (callback_url, callback_secret) = match &plan.callbacks {
            Some(cb) => (
                Some(cb.urls[i % cb.urls.len()].clone()),
                Some("otpd-loadtest-callback-secret".to_string()),
            ),
            None => (None, None),
        };
        let verify = VerifyOtp {
            phone_number: phone.clone(),
            code,
            callback_url,
            callback_secret,
        };
        match tokio::time::timeout(CALL_TIMEOUT, plan.runtime.verify(app, verify)).await {
            Ok(Ok(result)) => match result.outcome {
                VerifyOutcome::Verified { flake_id, .. } => {
                    if let Some(cb) = &plan.callbacks {
                        cb.returned
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(flake_id.to_string(), Instant::now());
                    }
                }
                VerifyOutcome::InvalidCode { .. } => {
                    tally.borrow_mut().error("verify_invalid_code");
                    continue;
                }
                VerifyOutcome::MaxAttempts { .. } => {
                    tally.borrow_mut().error("verify_max_attempts");
                    continue;
                }
                VerifyOutcome::Expired { .. } => {
                    tally.borrow_mut().error("verify_expired");
                    continue;
                }
                VerifyOutcome::AlreadyVerified { .. } => {
                    tally.borrow_mut().error("verify_already_verified");
                    continue;
                }
            },
            Ok(Err(e)) => {
                tally.borrow_mut().error(format!("verify_{}", e.code()));
                continue;
            }
            Err(_) => {
                tally.borrow_mut().error("verify_timeout");
                continue;
            }
        }
        let done = Instant::now();
        let mut t = tally.borrow_mut();
        let _ = t.verify.record(micros(done - coded));
        let _ = t.cycle.record(micros(done - started));
        t.cycles += 1;
        t.completed_at(done - plan.started);
    }
}

/// Runs `tasks` driver tasks spread over `threads` new arbiters; merges the
/// per-thread tallies.
pub(crate) async fn run_drivers(plan: Arc<Plan>, tasks: usize, threads: usize) -> Tally {
    let threads = threads.clamp(1, tasks);
    let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
    let mut results = Vec::with_capacity(threads);
    for (t, arbiter) in arbiters.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        results.push(rx);
        let plan = plan.clone();
        // spawn_fn runs the closure on the arbiter's thread; the driver futures
        // never cross threads, so they need not be Send.
        arbiter.spawn_fn(move || {
            if plan.local_actors {
                otpd_actors::host_actors_here();
            }
            actix_rt::spawn(async move {
                let tally = Rc::new(RefCell::new(Tally::new()));
                let handles: Vec<_> = (t..tasks)
                    .step_by(threads)
                    .map(|task| actix_rt::spawn(drive(plan.clone(), task, tasks, tally.clone())))
                    .collect();
                for h in handles {
                    if h.await.is_err() {
                        tally.borrow_mut().error("driver_task_panicked");
                    }
                }
                let _ = tx.send(tally.replace(Tally::new()));
            });
        });
    }
    let mut total = Tally::new();
    for rx in results {
        match rx.await {
            Ok(t) => total.merge(t),
            Err(_) => total.error("driver_thread_lost"),
        }
    }
    for a in arbiters {
        a.stop();
    }
    total
}

/// Waits until the snapshot writer has committed everything queued so far: a tiny
/// committed write (`storage_writable`) is queued behind the backlog, twice, so the
/// provider's trailing status writes are included. Returns how long that took.
pub(crate) async fn settle_storage(runtime: &Runtime) -> Duration {
    let started = Instant::now();
    for _ in 0..2 {
        let barrier = tokio::time::timeout(Duration::from_secs(120), runtime.storage_writable());
        if !matches!(barrier.await, Ok(true)) {
            tracing::warn!("the storage barrier did not commit; counters may be partial");
        }
    }
    started.elapsed()
}

/// The `--stats-readers` tasks: each reads the OTP overview of one app back to back
/// until stopped, recording each read's latency (µs).
pub(crate) struct StatsReaders {
    stop: Arc<AtomicBool>,
    tasks: Vec<actix_rt::task::JoinHandle<Histogram<u64>>>,
}

impl StatsReaders {
    /// Starts `n` reader tasks on the current arbiter (none when `n` is 0).
    pub(crate) fn start(runtime: &Runtime, app: &Arc<App>, n: usize) -> StatsReaders {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|_| {
                let (runtime, app, stop) = (runtime.clone(), app.clone(), stop.clone());
                actix_rt::spawn(async move {
                    let mut latencies = histogram();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        if runtime.otp_stats(&app, Some("day")).await.is_err() {
                            break;
                        }
                        let _ = latencies.record(started.elapsed().as_micros() as u64);
                    }
                    latencies
                })
            })
            .collect();
        StatsReaders { stop, tasks }
    }

    /// Stops the tasks and merges their latencies.
    pub(crate) async fn stop(self) -> Histogram<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = histogram();
        for task in self.tasks {
            if let Ok(h) = task.await {
                let _ = all.add(h);
            }
        }
        all
    }
}
