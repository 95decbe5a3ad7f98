//! Delivery mode: the loopback receiver (the shared `otpd_test_support::Receiver`
//! with an arrival observer), the webhook drivers and the delivery report.

use super::*;

/// What the in-process receiver saw.
#[derive(Default)]
pub(crate) struct Arrivals {
    /// Correlation key (flake id from the body, else the delivery id header) → arrival.
    pub(crate) arrived: HashMap<String, Instant>,
    pub(crate) requests: u64,
    pub(crate) first: Option<Instant>,
    pub(crate) last: Option<Instant>,
}

/// The loopback receiver: the shared test receiver (a real HTTP/1.1 server,
/// keep-alive on, nothing recorded) answering `200` with an empty body, and an
/// observer noting each request's arrival.
pub(crate) struct Receiver {
    pub(crate) port: u16,
    pub(crate) seen: Arc<Mutex<Arrivals>>,
    pub(crate) server: otpd_test_support::Receiver,
}

impl Receiver {
    pub(crate) fn start() -> Result<Receiver, String> {
        let seen = Arc::new(Mutex::new(Arrivals::default()));
        let state = seen.clone();
        let server = otpd_test_support::Receiver::builder(vec![Reply::Status(200, "")])
            .keep_alive(true)
            .record(false)
            .observe(move |r: &Received| {
                let now = Instant::now();
                let key = correlation_key(r);
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                s.requests += 1;
                s.first.get_or_insert(now);
                s.last = Some(now);
                if let Some(k) = key {
                    s.arrived.insert(k, now);
                }
            })
            .start()
            .map_err(|e| format!("starting the receiver: {e}"))?;
        Ok(Receiver {
            port: server.addr.port(),
            seen,
            server,
        })
    }

    pub(crate) fn requests(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).requests
    }

    pub(crate) fn stop(self) -> Arrivals {
        self.server.stop();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The correlation key: the `flake_id` in a callback body, else the delivery id.
pub(crate) fn correlation_key(r: &Received) -> Option<String> {
    const FIELD: &str = "\"flake_id\":\"";
    if let Some(at) = r.body.find(FIELD) {
        let rest = &r.body[at + FIELD.len()..];
        let end = rest.find('"')?;
        return Some(rest[..end].to_string());
    }
    r.headers.get("x-otpd-delivery-id").cloned()
}

/// One webhook-driver task: `test_webhook` on endpoint `task % E`, in a loop.
pub(crate) async fn drive_webhooks(
    plan: Arc<Plan>,
    hooks: Arc<Vec<(Arc<App>, String)>>,
    task: usize,
    tally: Rc<RefCell<Tally>>,
) {
    let cb = plan.callbacks.clone().expect("delivery mode");
    let mut n = task;
    while plan.claim() {
        let (app, id) = &hooks[n % hooks.len()];
        n += 1;
        let started = plan.start_cycle().await;
        match tokio::time::timeout(CALL_TIMEOUT, plan.runtime.test_webhook(app, id)).await {
            Ok(Ok(delivery_id)) => {
                let done = Instant::now();
                cb.returned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(delivery_id, done);
                let mut t = tally.borrow_mut();
                let _ = t.request.record(micros(done - started));
                t.cycles += 1;
                t.completed_at(done - plan.started);
            }
            Ok(Err(e)) => tally
                .borrow_mut()
                .error(format!("test_webhook_{}", e.code())),
            Err(_) => tally.borrow_mut().error("test_webhook_timeout"),
        }
    }
}

/// Runs `tasks` webhook-driver tasks on one new arbiter.
pub(crate) async fn run_webhook_drivers(
    plan: Arc<Plan>,
    hooks: Arc<Vec<(Arc<App>, String)>>,
    tasks: usize,
) -> Tally {
    let arbiter = Arbiter::new();
    let (tx, rx) = oneshot::channel();
    arbiter.spawn_fn(move || {
        actix_rt::spawn(async move {
            let tally = Rc::new(RefCell::new(Tally::new()));
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    actix_rt::spawn(drive_webhooks(
                        plan.clone(),
                        hooks.clone(),
                        t,
                        tally.clone(),
                    ))
                })
                .collect();
            for h in handles {
                if h.await.is_err() {
                    tally.borrow_mut().error("driver_task_panicked");
                }
            }
            let _ = tx.send(tally.replace(Tally::new()));
        });
    });
    let total = rx.await.unwrap_or_else(|_| {
        let mut t = Tally::new();
        t.error("driver_thread_lost");
        t
    });
    arbiter.stop();
    total
}

/// Delivery mode (see the module docs).
pub(crate) async fn run_deliveries(args: Args, db: PathBuf) -> Result<Outcome, String> {
    let n = args.deliveries.unwrap_or(0);
    let endpoints = args.endpoints;
    if n == 0 || endpoints == 0 || args.concurrency == 0 {
        return Err("--deliveries, --endpoints and --concurrency must be at least 1".into());
    }
    let receiver = Receiver::start()?;
    let urls: Vec<String> = (0..endpoints)
        .map(|e| format!("http://127.0.0.1:{}/cb/{e}", receiver.port))
        .collect();
    let driver = args.delivery_driver;
    let capture = driver == DeliveryDriver::Callbacks;
    let provider = Arc::new(HandoffProvider::new(capture));
    let runtime = Runtime::builder(runtime_config(&args, db))
        .provider(provider.clone())
        .start()
        .await
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let n_apps = match driver {
        DeliveryDriver::Callbacks => args.apps,
        DeliveryDriver::Webhooks => endpoints,
    };
    let apps = upsert_apps(&runtime, n_apps).await?;
    let mut hooks = Vec::new();
    if driver == DeliveryDriver::Webhooks {
        for (app, url) in apps.iter().zip(&urls) {
            let w = runtime
                .create_webhook(
                    app,
                    NewWebhook {
                        url: url.clone(),
                        service_type: "otp".into(),
                        events: None,
                        description: Some("otpd-loadtest receiver".into()),
                    },
                )
                .await
                .map_err(|e| format!("creating a webhook: {e}"))?;
            hooks.push((app.clone(), w.id.clone()));
        }
    }
    let phones = match driver {
        DeliveryDriver::Callbacks => phones(args.phones)?.0,
        DeliveryDriver::Webhooks => Vec::new(),
    };
    let callbacks = Arc::new(Callbacks {
        urls: urls.clone(),
        returned: Mutex::new(HashMap::new()),
    });
    let plan = Arc::new(Plan {
        runtime: runtime.clone(),
        provider: provider.clone(),
        apps,
        phones: Arc::new(phones),
        deadline: Instant::now() + Duration::from_secs(args.duration_secs),
        budget: AtomicU64::new(n),
        hold: false,
        callbacks: Some(callbacks.clone()),
        started: Instant::now(),
        pace: args.rate.map(|r| Pace::new(r, Instant::now())),
        local_actors: args.actors == ActorsArg::Local,
    });
    let storage_before = StorageCounters::read(&runtime);
    let (ok_before, failed_before) = runtime.deliveries_finished();
    let load_before = loadavg();
    let cpu_before = cpu_secs();
    let started = Instant::now();
    let tally = match driver {
        DeliveryDriver::Callbacks => {
            let tasks = args.concurrency.min(plan.phones.len());
            run_drivers(plan.clone(), tasks, args.driver_threads).await
        }
        DeliveryDriver::Webhooks => {
            run_webhook_drivers(plan.clone(), Arc::new(hooks), args.concurrency).await
        }
    };
    let driven = started.elapsed();
    // Every successful call produced one delivery: wait (bounded) until all arrived.
    let expected = tally.cycles;
    let wait_until = Instant::now() + DELIVERY_WAIT;
    while receiver.requests() < expected && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = started.elapsed();
    let drain = settle_storage(&runtime).await;
    let storage = StorageCounters::read(&runtime).since(storage_before);
    let (ok_after, failed_after) = runtime.deliveries_finished();
    let cpu_used = cpu_secs() - cpu_before;
    let cpu_cores = cpu_used / (waited + drain).as_secs_f64();
    let load_after = loadavg();
    let peak = proc_status_kib("VmHWM");
    let pace = plan
        .pace
        .as_ref()
        .map(|p| pace_json(p, tally.cycles, driven));
    drop(plan);
    runtime.shutdown().await;
    let seen = receiver.stop();

    let returned =
        std::mem::take(&mut *callbacks.returned.lock().unwrap_or_else(|e| e.into_inner()));
    let mut delay = histogram();
    let mut early = 0u64;
    let mut unmatched = 0u64;
    for (key, at) in &returned {
        match seen.arrived.get(key) {
            Some(arrived) if arrived >= at => {
                let _ = delay.record(micros(*arrived - *at));
            }
            Some(_) => {
                early += 1;
                let _ = delay.record(1);
            }
            None => unmatched += 1,
        }
    }
    let span = seen.last.map_or(waited, |last| last - started);
    let rate = seen.requests as f64 / span.as_secs_f64().max(1e-9);
    let failures = tally.failures() + unmatched;
    let driver_name = format!("{driver:?}").to_lowercase();
    let mut report = serde_json::json!({
        "config": {
            "mode": "deliveries",
            "driver": driver_name,
            "deliveries_limit": n,
            "endpoints": endpoints,
            "apps": n_apps,
            "concurrency": args.concurrency,
            "duration_secs": args.duration_secs,
            "durability": format!("{:?}", args.durability).to_lowercase(),
            "max_in_flight": runtime.config().delivery.max_in_flight,
            "arbiters": args.arbiters,
        },
        "produced": tally.cycles,
        "failed": tally.failures(),
        "errors": tally.errors,
        "received": seen.requests,
        "unmatched": unmatched,
        "arrived_before_return": early,
        "runtime_succeeded": ok_after - ok_before,
        "runtime_failed": failed_after - failed_before,
        "drive_secs": (driven.as_secs_f64() * 1000.0).round() / 1000.0,
        "span_secs": (span.as_secs_f64() * 1000.0).round() / 1000.0,
        "produced_per_sec": (tally.cycles as f64 / driven.as_secs_f64()).round(),
        "deliveries_per_sec": rate.round(),
        "call": summary(&tally.request),
        "delay": summary(&delay),
        "peak_rss_mib": mib(peak),
        "storage": storage.json(waited + drain),
        "cpu_cores_used": (cpu_cores * 100.0).round() / 100.0,
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": load_after,
    });
    let (us_per_op, ops_per_delivery) = storage.per_unit(seen.requests);
    let cpu_us_per_delivery = per_unit_us(cpu_used, seen.requests);
    report["cpu_us_per_delivery"] = serde_json::json!(cpu_us_per_delivery);
    report["writer_us_per_op"] = serde_json::json!(us_per_op);
    report["writer_cpu_us_per_op"] = serde_json::json!(storage.cpu_us_per_op());
    report["writer_ops_per_delivery"] = serde_json::json!(ops_per_delivery);
    report["completions"] = tally.timeline_json(driven);
    if driver == DeliveryDriver::Callbacks {
        report["cycle"] = summary(&tally.cycle);
    }
    if let Some(p) = &pace {
        report["rate"] = p.clone();
    }
    let mut text = String::new();
    use std::fmt::Write as _;
    let s = &report["storage"];
    let _ = writeln!(
        text,
        "otpd-loadtest: mode=deliveries driver={driver_name} endpoints={endpoints} limit={n} concurrency={} durability={} max_in_flight={}",
        args.concurrency,
        report["config"]["durability"].as_str().unwrap_or(""),
        report["config"]["max_in_flight"],
    );
    let _ = writeln!(
        text,
        "produced:         {} in {:.2} s ({:.0}/s), failed {}; call {}",
        tally.cycles,
        driven.as_secs_f64(),
        tally.cycles as f64 / driven.as_secs_f64(),
        tally.failures(),
        summary_line(&tally.request)
    );
    let _ = writeln!(
        text,
        "received:         {} in {:.2} s = {:.0} deliveries/s (runtime: {} succeeded, {} failed); unmatched {unmatched}",
        seen.requests,
        span.as_secs_f64(),
        rate,
        ok_after - ok_before,
        failed_after - failed_before
    );
    let _ = writeln!(
        text,
        "return→arrival:   {} ({early} arrived before the call returned, counted as 0)",
        summary_line(&delay)
    );
    write_errors(&mut text, &tally.errors);
    let _ = writeln!(
        text,
        "group commit:     {} commits, {} ops/commit avg, {} µs/commit avg, writer busy {}%",
        s["commits"], s["ops_per_commit"], s["avg_commit_us"], s["writer_busy_pct"]
    );
    let _ = writeln!(
        text,
        "writer:           {us_per_op:.2} µs/op ({:.2} of them on a CPU), {ops_per_delivery:.2} ops per delivery",
        storage.cpu_us_per_op()
    );
    if driver == DeliveryDriver::Callbacks {
        let _ = writeln!(text, "full cycle:       {}", summary_line(&tally.cycle));
    }
    let _ = writeln!(
        text,
        "calls completed:  {}",
        timeline_line(&report["completions"])
    );
    if let Some(p) = &pace {
        let _ = writeln!(text, "rate:             {}", pace_line(p));
    }
    let _ = write!(
        text,
        "cpu:              {:.2} cores used = {cpu_us_per_delivery:.1} µs per delivery (load average {:.2} before, {:.2} after); peak RSS {:.1} MiB",
        cpu_cores,
        load_before,
        load_after,
        mib(peak)
    );
    Ok(Outcome {
        report,
        text,
        failures,
    })
}
