//! Inbox ingest (issue 4): signed activities from a remote server on
//! 127.0.0.1, remote keys cached, posted to the shared inbox of a real
//! Chorus on a durable private cluster (fsync on, synchronous commit):
//! - how many are accepted (202, durably stored) per second, with the load
//!   generator on the same machine;
//! - the lag from each 202 to its interpretation showing in the read
//!   models, at 2,000 activities/s;
//! - beside them, the RSA-2048 verification rate of this machine (aws-lc,
//!   all cores), measured in the same run: the physical limit of the path.
//!
//! Run with `cargo bench -p chorus-tests --bench inbox`;
//! `CHORUS_BENCH_SCALE` (default 1.0) scales the number of requests.

/// The allocator of the `chorus` binary, which this benchmark runs in process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chorus_tests::bench::{Signed, follow_all, rsa_verify_rate, scale, send, sign_notes, threads};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_api::app::App;
use chorus_api::config::FederationSettings;
use chorus_api::federation::Federation;
use chorus_api::federation::interpret::Interpreter;
use chorus_api::http::{AppState, router};
use chorus_domain::{EventId, EventStore, Position};
use chorus_postgres::{PgEventStore, PrivateCluster};
use chorus_projections::Projections;
use chorus_tests::app::last_committed;
use chorus_tests::remote::{KeyStyle, RemoteActor, RemoteServer};
use futures::StreamExt;
use hdrhistogram::Histogram;

/// The target rate of the lag measurement and the throughput floor.
const TARGET_RATE: f64 = 2000.0;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    chorus_tests::bench::on_durable_cluster("inbox", run).await
}

async fn run(cluster: &PrivateCluster) -> anyhow::Result<()> {
    let pool = chorus_tests::bench::bench_database(cluster, 48).await?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let base = format!("http://127.0.0.1:{port}");
    let store = PgEventStore::new(pool.clone());
    let projections = Arc::new(Projections::start(store.clone()).await?);
    let settings = FederationSettings {
        allow_private_addresses: true,
        // One load generator stands for many servers here.
        inbox_rate_per_instance: 1_000_000,
        inbox_rate_per_ip: 1_000_000,
        ..FederationSettings::default()
    };
    let federation =
        Arc::new(Federation::new(&settings, pool.clone(), store.clone(), &base).await?);
    let interpreter =
        Interpreter::start(App::new(store.clone(), &base), federation.clone()).await?;
    let url = url::Url::parse(&base)?;
    let state = AppState::with_projections(pool.clone(), store.clone(), &url, projections.clone())
        .with_federation(federation.clone());
    tokio::spawn(async move {
        if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
            let _ = axum::serve(
                listener,
                router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await;
        }
    });

    let app = App::new(store.clone(), &base);
    let mut locals = Vec::new();
    for i in 0..20 {
        let created = app
            .create_account(&format!("local{i}"), None, false, false)
            .await?;
        locals.push(created.actor.uri);
    }
    let remote = RemoteServer::start().await;
    let actors: Vec<RemoteActor> = (0..100)
        .map(|i| remote.actor(&format!("r{i}"), i, KeyStyle::Fragment))
        .collect();
    let inbox = format!("{base}/inbox");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;

    // Warm-up: every remote actor follows a local one, so its key is
    // fetched and cached before anything is timed.
    follow_all(&client, &remote, &actors, &locals, &inbox).await?;
    wait_for_everything(&pool, &interpreter, &projections).await?;

    let verify_rate = rsa_verify_rate();
    println!(
        "RSA-2048 verification (aws-lc, {} threads): {verify_rate:.0} verifies/s",
        threads()
    );

    // Every request signed up front: the load generator must not spend the
    // machine's two cores signing while the server verifies.
    let throughput_n = scale(40_000);
    let lag_seconds = 10.0 * scale(1000) as f64 / 1000.0;
    let lag_n = (TARGET_RATE * lag_seconds) as usize;
    let started = Instant::now();
    let requests = sign_notes(
        &remote,
        &actors,
        &locals,
        std::slice::from_ref(&inbox),
        "",
        throughput_n + lag_n,
    )
    .await?;
    println!(
        "signed {} requests in {:.1} s",
        requests.len(),
        started.elapsed().as_secs_f64()
    );
    let mut requests = requests.into_iter();

    // 1. Throughput: 64 connections sending as fast as the server accepts.
    // With `wrk` installed (a C load generator, as in the read-model
    // benchmark), it replays the signed requests; otherwise a client in this
    // process sends them, competing with the server for the same cores.
    let batch: Vec<Signed> = requests.by_ref().take(throughput_n).collect();
    if let Some(rate) = wrk_throughput(&pool, &batch, port, throughput_n).await? {
        println!(
            "wrk: {rate:.0} signed activities/s accepted and durably stored ({:.0}% of the machine's RSA verification rate)",
            100.0 * rate / verify_rate
        );
        wait_for_everything(&pool, &interpreter, &projections).await?;
        return finish(
            &store,
            &pool,
            &client,
            &inbox,
            requests.collect(),
            rate,
            verify_rate,
            lag_n,
            &interpreter,
            &projections,
        )
        .await;
    }
    let started = Instant::now();
    let statuses: Vec<anyhow::Result<u16>> = futures::stream::iter(batch)
        .map(|r| {
            let client = client.clone();
            let inbox = inbox.clone();
            async move { send(&client, &inbox, r.body, &r.headers).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = statuses.iter().filter(|s| matches!(s, Ok(202))).count();
    anyhow::ensure!(
        accepted == throughput_n,
        "only {accepted} of {throughput_n} requests were accepted: {:?}",
        statuses.iter().find(|s| !matches!(s, Ok(202)))
    );
    let rate = accepted as f64 / elapsed;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ActivityReceived'")
            .fetch_one(&pool)
            .await?;
    anyhow::ensure!(
        stored as usize >= throughput_n + actors.len(),
        "only {stored} activities are stored"
    );
    println!(
        "accepted {accepted} signed activities in {elapsed:.2} s: {rate:.0}/s ({:.0}% of the machine's RSA verification rate)",
        100.0 * rate / verify_rate
    );
    let last = last_committed(&pool).await;
    println!(
        "  at that moment, events behind the head: interpreter {}, {}",
        last.minor().saturating_sub(interpreter.position().minor()),
        projections
            .positions()
            .iter()
            .map(|(name, p)| format!("{name} {}", last.minor().saturating_sub(p.minor())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    anyhow::ensure!(interpreter.reached(last, Duration::from_secs(600)).await);
    println!(
        "  interpreted {:.2} s after the first request",
        started.elapsed().as_secs_f64()
    );
    wait_for_everything(&pool, &interpreter, &projections).await?;
    println!(
        "  projected {:.2} s after the first request ({:.0} activities/s end to end)",
        started.elapsed().as_secs_f64(),
        accepted as f64 / started.elapsed().as_secs_f64()
    );

    finish(
        &store,
        &pool,
        &client,
        &inbox,
        requests.collect(),
        rate,
        verify_rate,
        lag_n,
        &interpreter,
        &projections,
    )
    .await
}

/// The lag phase at the target rate, and the report.
#[allow(clippy::too_many_arguments)]
async fn finish(
    store: &PgEventStore,
    pool: &sqlx::PgPool,
    client: &reqwest::Client,
    inbox: &str,
    requests: Vec<Signed>,
    rate: f64,
    verify_rate: f64,
    lag_n: usize,
    interpreter: &Interpreter,
    projections: &Arc<Projections>,
) -> anyhow::Result<()> {
    wait_for_everything(pool, interpreter, projections).await?;
    // 2. Lag at the target rate: from each 202 to the interpreter's events
    // for it being applied by every projection.
    let sent_at: Arc<Mutex<HashMap<EventId, Instant>>> = Arc::default();
    let lags = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let head = last_committed(pool).await;
    let mut log = store.subscribe_all(head);
    let watcher = {
        let sent_at = sent_at.clone();
        let lags = lags.clone();
        let projections = projections.clone();
        tokio::spawn(async move {
            let mut seen = 0usize;
            while let Some(Ok(event)) = log.next().await {
                let Some(cause) = event.metadata.causation_id else {
                    continue;
                };
                let Some(sent) = sent_at.lock().ok().and_then(|m| m.get(&cause).copied()) else {
                    continue;
                };
                seen += 1;
                let projections = projections.clone();
                let lags = lags.clone();
                tokio::spawn(async move {
                    projections
                        .wait_for(event.position, Duration::from_secs(60))
                        .await;
                    let lag = sent.elapsed().as_micros() as u64;
                    if let Ok(mut h) = lags.lock() {
                        let _ = h.record(lag.max(1));
                    }
                });
                if seen == lag_n {
                    break;
                }
            }
        })
    };
    let interval = Duration::from_secs_f64(1.0 / TARGET_RATE);
    let started = Instant::now();
    let mut inflight = Vec::with_capacity(lag_n);
    for (i, request) in requests.into_iter().enumerate() {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let client = client.clone();
        let inbox = inbox.to_owned();
        let sent_at = sent_at.clone();
        // The lag counts from the 202, as a sender sees it; until the
        // answer is back, from the moment of sending (so an activity
        // interpreted before its 202 arrives counts longer, never shorter).
        if let Ok(mut map) = sent_at.lock() {
            map.insert(request.event, Instant::now());
        }
        inflight.push(tokio::spawn(async move {
            let status = send(&client, &inbox, request.body, &request.headers).await?;
            if let Ok(mut map) = sent_at.lock() {
                map.insert(request.event, Instant::now());
            }
            anyhow::Ok(status)
        }));
    }
    let send_elapsed = started.elapsed().as_secs_f64();
    let mut ok = 0;
    for task in inflight {
        if matches!(task.await, Ok(Ok(202))) {
            ok += 1;
        }
    }
    anyhow::ensure!(
        ok == lag_n,
        "only {ok} of {lag_n} paced requests were accepted"
    );
    tokio::time::timeout(Duration::from_secs(120), watcher).await??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lags = lags
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let p = |q: f64| lags.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "lag from 202 to read models at {:.0} activities/s over {send_elapsed:.1} s ({} samples): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lag_n as f64 / send_elapsed,
        lags.len(),
        p(0.5),
        p(0.99),
        lags.max() as f64 / 1000.0
    );

    println!();
    println!("| benchmark | result | baseline | target | met |");
    println!("|---|---|---|---|---|");
    let rate_met = rate >= TARGET_RATE;
    let lag_met = p(0.99) < 1000.0;
    println!(
        "| inbox ingest, signed, keys cached | {rate:.0} activities/s | RSA verify {verify_rate:.0}/s ({:.0}%) | ≥ 2000/s | {} |",
        100.0 * rate / verify_rate,
        if rate_met { "yes" } else { "**no**" }
    );
    println!(
        "| lag 202 → read models at 2000/s | p99 {:.1} ms (p50 {:.1} ms) | — | p99 < 1 s | {} |",
        p(0.99),
        p(0.5),
        if lag_met { "yes" } else { "**no**" }
    );
    anyhow::ensure!(rate_met && lag_met, "some targets were not met");
    Ok(())
}

/// Replays the signed requests with `wrk`; `None` when it is not installed.
/// The rate is of activities durably stored (counted in the log), over the
/// time wrk ran.
async fn wrk_throughput(
    pool: &sqlx::PgPool,
    requests: &[Signed],
    port: u16,
    n: usize,
) -> anyhow::Result<Option<f64>> {
    if tokio::process::Command::new("wrk")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        return Ok(None);
    }
    let mut lua = String::from("local requests = {\n");
    for r in requests {
        let mut raw = format!(
            "POST /inbox HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
            r.body.len()
        );
        for (name, value) in &r.headers {
            if !name.eq_ignore_ascii_case("host") {
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        raw.push_str("\r\n");
        raw.push_str(std::str::from_utf8(&r.body)?);
        lua.push_str("[==[");
        lua.push_str(&raw);
        lua.push_str("]==],\n");
    }
    lua.push_str(
        "}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  if i > #requests then i = 1 end\n  return requests[i]\nend\n",
    );
    let script = std::env::temp_dir().join(format!("chorus-inbox-{}.lua", std::process::id()));
    std::fs::write(&script, lua)?;
    let before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ActivityReceived'")
            .fetch_one(pool)
            .await?;
    // Long enough for a quarter of them at the target rate, so that the
    // supply of distinct activities outlasts a server up to four times as
    // fast; should it run out, wrk wraps around, and repeats are stored
    // once (not counted).
    let seconds = (n as f64 / (4.0 * TARGET_RATE)).ceil() as u64;
    let started = Instant::now();
    let output = tokio::process::Command::new("wrk")
        .args(["-t", "1", "-c", "64", "-d", &format!("{seconds}s"), "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/inbox"))
        .output()
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx")) {
        anyhow::bail!("wrk saw refusals: {line}\n{text}");
    }
    let after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ActivityReceived'")
            .fetch_one(pool)
            .await?;
    let summary = text
        .lines()
        .find(|l| l.contains("requests in"))
        .unwrap_or("")
        .trim();
    println!("wrk: {summary}");
    // wrk's own clock starts once its script is loaded (tens of MB here).
    let seconds = summary
        .split_once(" in ")
        .and_then(|(_, rest)| rest.split_once('s'))
        .and_then(|(s, _)| s.parse::<f64>().ok())
        .unwrap_or(elapsed);
    let stored = (after - before) as usize;
    if stored >= n {
        println!("  every distinct request was stored before wrk stopped: the rate is a floor");
    }
    Ok(Some(stored as f64 / seconds))
}

/// Waits until the interpreter and the projections have processed the log.
async fn wait_for_everything(
    pool: &sqlx::PgPool,
    interpreter: &Interpreter,
    projections: &Projections,
) -> anyhow::Result<()> {
    let mut settled = Position::START;
    loop {
        let last = last_committed(pool).await;
        if last == settled {
            return Ok(());
        }
        anyhow::ensure!(
            interpreter.reached(last, Duration::from_secs(300)).await,
            "the interpreter did not catch up"
        );
        anyhow::ensure!(
            projections.wait_for(last, Duration::from_secs(300)).await,
            "the projections did not catch up"
        );
        settled = last;
    }
}
