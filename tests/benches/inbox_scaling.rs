//! Inbox ingest across processes (issue 8): the same signed load posted to
//! ONE `chorus serve --role api` process (phase A), then spread round-robin
//! over TWO (phase B), each phase with one `--role worker` (the interpreter)
//! and one `--role projector` process, all the real release binary against
//! one durable private cluster (fsync on, synchronous commit). It reports
//! accepted activities/s per phase and the ratio B/A, and where the time
//! goes: the CPU of every process over the measured window (each `chorus`
//! process, the Postgres backends serving each of them, Postgres's own
//! background processes, this bench as the load generator, and the whole
//! machine from `/proc/stat`), Postgres's commits and WAL flushes
//! (`pg_stat_database`, `pg_stat_wal` with `track_wal_io_timing` on), and
//! the RSA-2048 verification rate of the machine measured in the same run.
//!
//! Run with `cargo bench -p chorus-tests --bench inbox_scaling`;
//! `CHORUS_BENCH_SCALE` (default 1.0) scales the number of requests per
//! phase. The `chorus` binary: a bench of `chorus-tests` does not build the
//! binaries of its dependencies, and a `chorus` lying in `target/release`
//! may be older than the code, so the bench runs `cargo build --release -p
//! chorus-api --bin chorus` itself first (the cargo that built the bench,
//! same target directory; a no-op when it is up to date) and runs the
//! executable that build reports. `RUST_LOG` (default `warn`) is passed on
//! to the `chorus` processes, whose logs go to this bench's stderr.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chorus_api::app::App;
use chorus_postgres::{PgEventStore, PrivateCluster, checkpoints};
use chorus_tests::app::last_committed;
use chorus_tests::bench::{Signed, follow_all, rsa_verify_rate, scale, send, sign_notes, threads};
use chorus_tests::cli::{free_port, wait_ready};
use chorus_tests::remote::{KeyStyle, RemoteActor, RemoteServer};
use futures::StreamExt;
use sqlx::PgPool;

/// Requests in flight at once, over all api processes, in both phases.
const CONCURRENCY: usize = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let binary = chorus_binary()?;
    chorus_tests::bench::on_durable_cluster("inbox_scaling", async |cluster| {
        run(cluster, binary).await
    })
    .await
}

/// Builds the release `chorus` binary (see the header) and returns its path.
fn chorus_binary() -> anyhow::Result<PathBuf> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "chorus-api", "--bin", "chorus"])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(manifest)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo to build the chorus binary")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo build --release -p chorus-api --bin chorus failed"
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "chorus")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo built no chorus executable")
}

/// The `chorus` processes of the run, killed when dropped (a failed run
/// too); each with the label its figures are reported under.
#[derive(Default)]
struct Fleet(Vec<(String, Child)>);

impl Fleet {
    fn pids(&self) -> Vec<(u32, String)> {
        self.0.iter().map(|(l, c)| (c.id(), l.clone())).collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What every phase needs.
struct Bench {
    binary: PathBuf,
    pool: PgPool,
    database_url: String,
    /// The public address of every api process (a load balancer's).
    base: String,
    remote: RemoteServer,
    actors: Vec<RemoteActor>,
    locals: Vec<String>,
    client: reqwest::Client,
    postmaster: u32,
    ticks_per_second: f64,
}

impl Bench {
    /// Starts `chorus serve --role ROLE` as `label`, listening on `port` if
    /// it serves HTTP. Its database sessions are named after the label, so
    /// that Postgres's backends can be put down to the process they serve.
    fn start(&self, fleet: &mut Fleet, label: &str, role: &str, port: u16) -> anyhow::Result<()> {
        let child = Command::new(&self.binary)
            .args(["serve", "--role", role])
            .env_remove("CHORUS_CONFIG")
            .env(
                "DATABASE_URL",
                format!(
                    "{}?application_name={}",
                    self.database_url,
                    session_name(label)
                ),
            )
            .env("CHORUS_BIND", format!("127.0.0.1:{port}"))
            .env("CHORUS_BASE_URL", &self.base)
            .env("CHORUS_ALLOW_PRIVATE_ADDRESSES", "true")
            // One load generator stands for many servers here.
            .env("CHORUS_INBOX_RATE_PER_INSTANCE", "1000000")
            .env("CHORUS_INBOX_RATE_PER_IP", "1000000")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        fleet.0.push((label.to_owned(), child));
        Ok(())
    }
}

/// The `application_name` of `label`'s pooled sessions.
fn session_name(label: &str) -> String {
    format!("bench-{}", label.replace(' ', "-"))
}

async fn run(cluster: &PrivateCluster, binary: PathBuf) -> anyhow::Result<()> {
    let pool = chorus_tests::bench::bench_database(cluster, 4).await?;
    // WAL write and flush times in pg_stat_wal (off by default).
    sqlx::query("ALTER SYSTEM SET track_wal_io_timing = on")
        .execute(&pool)
        .await?;
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&pool)
        .await?;
    let postmaster = std::fs::read_to_string(cluster.data_dir().join("pgdata/postmaster.pid"))?
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("no postmaster pid")?;
    let ticks_per_second = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);

    let ports = [free_port(), free_port()];
    let apis = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let base = apis[0].clone();
    let app = App::new(PgEventStore::new(pool.clone()), &base);
    let mut locals = Vec::new();
    for i in 0..20 {
        let created = app
            .create_account(&format!("local{i}"), None, false, false)
            .await?;
        locals.push(created.actor.uri);
    }
    let remote = RemoteServer::start().await;
    let actors = (0..100)
        .map(|i| remote.actor(&format!("r{i}"), i, KeyStyle::Fragment))
        .collect();
    let bench = Bench {
        binary,
        pool: pool.clone(),
        database_url: cluster.url("bench"),
        base,
        remote,
        actors,
        locals,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        postmaster,
        ticks_per_second,
    };

    let mut fleet = Fleet::default();
    bench.start(&mut fleet, "worker", "worker", free_port())?;
    bench.start(&mut fleet, "projector", "projector", free_port())?;
    bench.start(&mut fleet, "api 1", "api", ports[0])?;
    wait_ready(&mut fleet.0[2].1, &apis[0]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !chorus_postgres::leases::holders(&pool, &chorus_api::roles::all_leases())
        .await?
        .iter()
        .all(|(_, holder)| holder.is_some())
    {
        anyhow::ensure!(Instant::now() < deadline, "the leases were never all taken");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every remote actor follows a local account (so that the notes land in
    // home timelines and its key is fetched), then the log settles.
    follow_all(
        &bench.client,
        &bench.remote,
        &bench.actors,
        &bench.locals,
        &format!("{}/inbox", apis[0]),
    )
    .await?;
    settle(&pool).await?;

    let verify_rate = rsa_verify_rate();
    println!(
        "RSA-2048 verification (aws-lc, {} threads): {verify_rate:.0} verifies/s",
        threads()
    );
    let n = scale(30_000);

    let a = phase(&bench, &fleet, "A", &apis[..1], n).await?;
    a.print(verify_rate);
    bench.start(&mut fleet, "api 2", "api", ports[1])?;
    wait_ready(&mut fleet.0[3].1, &apis[1]).await;
    let b = phase(&bench, &fleet, "B", &apis, n).await?;
    b.print(verify_rate);

    println!();
    println!("| | phase A: 1 api process | phase B: 2 api processes | B/A |");
    println!("|---|---|---|---|");
    println!(
        "| accepted activities/s | {:.0} | {:.0} | {:.2} |",
        a.rate(),
        b.rate(),
        b.rate() / a.rate()
    );
    println!(
        "| % of RSA verify rate ({verify_rate:.0}/s) | {:.1}% | {:.1}% | |",
        100.0 * a.rate() / verify_rate,
        100.0 * b.rate() / verify_rate
    );
    for (name, f) in [
        (
            "machine busy (of 2 cores)",
            Figures::machine_share as fn(&Figures) -> f64,
        ),
        ("api processes", |f: &Figures| f.share(&["api"])),
        ("worker + projector", |f: &Figures| {
            f.share(&["worker", "projector"])
        }),
        ("postgres (all processes)", |f: &Figures| {
            f.share(&["postgres"])
        }),
        ("load generator", |f: &Figures| f.share(&["load generator"])),
        ("other processes on the machine", |f: &Figures| {
            f.others() / f.cores as f64
        }),
    ] {
        println!(
            "| {name} | {:.0}% | {:.0}% | |",
            100.0 * f(&a),
            100.0 * f(&b)
        );
    }
    println!(
        "| commits per accepted activity (window) | {:.2} | {:.2} | |",
        a.commits as f64 / a.accepted as f64,
        b.commits as f64 / b.accepted as f64
    );
    println!(
        "| WAL flushes/s; flush time share of the window | {:.0}; {:.0}% | {:.0}; {:.0}% | |",
        a.wal_syncs as f64 / a.seconds,
        100.0 * a.wal_sync_ms / 1000.0 / a.seconds,
        b.wal_syncs as f64 / b.seconds,
        100.0 * b.wal_sync_ms / 1000.0 / b.seconds,
    );
    println!();
    println!(
        "B/A = {:.2}: {:.0} → {:.0} accepted activities/s",
        b.rate() / a.rate(),
        a.rate(),
        b.rate()
    );
    println!("verdict (phase B): {}", b.verdict());
    println!("verdict (phase A): {}", a.verdict());
    drop(fleet);
    Ok(())
}

/// What one phase measured.
struct Figures {
    name: String,
    apis: usize,
    accepted: usize,
    seconds: f64,
    /// From the first request to the interpreter and every projection
    /// having processed everything.
    drained: f64,
    /// Cores used over the window, by process label.
    cpu: BTreeMap<String, f64>,
    /// Busy cores of the whole machine over the window.
    machine: f64,
    cores: usize,
    commits: i64,
    wal_syncs: i64,
    wal_sync_ms: f64,
    wal_bytes: i64,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.seconds
    }

    /// Cores used by processes outside the run (others sharing the machine).
    fn others(&self) -> f64 {
        (self.machine - self.cpu.values().sum::<f64>()).max(0.0)
    }

    fn machine_share(&self) -> f64 {
        self.machine / self.cores as f64
    }

    /// The share of the machine's cores used by the processes whose labels
    /// start with one of `prefixes`.
    fn share(&self, prefixes: &[&str]) -> f64 {
        self.cpu
            .iter()
            .filter(|(label, _)| prefixes.iter().any(|p| label.starts_with(p)))
            .map(|(_, cores)| cores)
            .sum::<f64>()
            / self.cores as f64
    }

    fn print(&self, verify_rate: f64) {
        println!();
        println!(
            "phase {} ({} api process{}): accepted {} signed activities in {:.2} s: {:.0}/s ({:.1}% of the machine's RSA verification rate); interpreted and projected {:.2} s after the first request",
            self.name,
            self.apis,
            if self.apis == 1 { "" } else { "es" },
            self.accepted,
            self.seconds,
            self.rate(),
            100.0 * self.rate() / verify_rate,
            self.drained
        );
        let listed: f64 = self.cpu.values().sum();
        println!(
            "  CPU over the window, in cores: {}; these {listed:.2}, the whole machine {:.2} of {} ({:.0}% busy; other processes on the machine {:.2})",
            self.cpu
                .iter()
                .map(|(label, cores)| format!("{label} {cores:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.machine,
            self.cores,
            100.0 * self.machine_share(),
            self.others()
        );
        let api_cores = self.share(&["api"]) * self.cores as f64;
        // One core verifies verify_rate / cores signatures a second.
        let verify_cores = self.rate() * self.cores as f64 / verify_rate;
        println!(
            "  api CPU per accepted activity: {:.0} µs, of which RSA verification {:.0} µs ({:.0}%)",
            1e6 * api_cores / self.rate(),
            1e6 * verify_cores / self.rate(),
            100.0 * verify_cores / api_cores
        );
        println!(
            "  postgres: {} commits ({:.0}/s, {:.2} per activity); {} WAL flushes ({:.0}/s, {:.1} activities each), flushing {:.0}% of the window; {:.1} MB of WAL ({:.0} bytes per activity)",
            self.commits,
            self.commits as f64 / self.seconds,
            self.commits as f64 / self.accepted as f64,
            self.wal_syncs,
            self.wal_syncs as f64 / self.seconds,
            self.accepted as f64 / self.wal_syncs.max(1) as f64,
            100.0 * self.wal_sync_ms / 1000.0 / self.seconds,
            self.wal_bytes as f64 / 1e6,
            self.wal_bytes as f64 / self.accepted as f64
        );
    }

    /// Where the bottleneck sits, from the figures.
    fn verdict(&self) -> String {
        let busy = self.machine_share();
        let flushing = self.wal_sync_ms / 1000.0 / self.seconds;
        let split = format!(
            "api processes {:.0}%, postgres {:.0}%, worker + projector {:.0}%, load generator {:.0}%, other processes on the machine {:.0}%",
            100.0 * self.share(&["api"]),
            100.0 * self.share(&["postgres"]),
            100.0 * self.share(&["worker", "projector"]),
            100.0 * self.share(&["load generator"]),
            100.0 * self.others() / self.cores as f64
        );
        if busy >= 0.9 {
            format!(
                "CPU-bound: {} cores {:.0}% busy, {split}",
                self.cores,
                100.0 * busy
            )
        } else if flushing >= 0.8 {
            format!(
                "WAL-flush-bound: Postgres flushed its WAL {:.0}% of the window, {} cores {:.0}% busy ({split})",
                100.0 * flushing,
                self.cores,
                100.0 * busy
            )
        } else {
            format!(
                "neither the cores ({:.0}% busy) nor the WAL flushes ({:.0}% of the window) are saturated: the {CONCURRENCY} requests in flight wait on something else ({split})",
                100.0 * busy,
                100.0 * flushing
            )
        }
    }
}

/// Postgres's commit and WAL counters.
#[derive(Clone, Copy)]
struct PgCounters {
    commits: i64,
    wal_syncs: i64,
    wal_sync_ms: f64,
    wal_bytes: i64,
}

async fn pg_counters(pool: &PgPool) -> anyhow::Result<PgCounters> {
    let commits: i64 =
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'")
            .fetch_one(pool)
            .await?;
    let (wal_syncs, wal_sync_ms, wal_bytes): (i64, f64, i64) =
        sqlx::query_as("SELECT wal_sync, wal_sync_time, wal_bytes::bigint FROM pg_stat_wal")
            .fetch_one(pool)
            .await?;
    Ok(PgCounters {
        commits,
        wal_syncs,
        wal_sync_ms,
        wal_bytes,
    })
}

async fn received(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ActivityReceived'")
            .fetch_one(pool)
            .await?,
    )
}

/// One phase: warm-up through every api process, then `n` pre-signed
/// deliveries spread round-robin over `apis`, `CONCURRENCY` at a time.
async fn phase(
    bench: &Bench,
    fleet: &Fleet,
    name: &str,
    apis: &[String],
    n: usize,
) -> anyhow::Result<Figures> {
    let inboxes: Vec<String> = apis.iter().map(|a| format!("{a}/inbox")).collect();
    let started = Instant::now();
    let requests = sign_notes(
        &bench.remote,
        &bench.actors,
        &bench.locals,
        &inboxes,
        &format!("{name}-"),
        n,
    )
    .await?;
    println!(
        "\nphase {name}: signed {} requests in {:.1} s",
        requests.len(),
        started.elapsed().as_secs_f64()
    );
    // Warm-up: every actor posts once to every api process, so that each has
    // the keys (and whatever else it caches) before the window.
    for (k, inbox) in inboxes.iter().enumerate() {
        let warm = sign_notes(
            &bench.remote,
            &bench.actors,
            &bench.locals,
            std::slice::from_ref(inbox),
            &format!("warm-{name}{k}-"),
            bench.actors.len(),
        )
        .await?;
        post_all(&bench.client, warm).await?;
    }
    settle(&bench.pool).await?;

    let stored_before = received(&bench.pool).await?;
    let pg_before = pg_counters(&bench.pool).await?;
    let sampler = Sampler::start(bench, fleet).await?;
    let started = Instant::now();
    let accepted = post_all(&bench.client, requests).await?;
    let seconds = started.elapsed().as_secs_f64();
    let pg_after = pg_counters(&bench.pool).await?;
    let (cpu, machine) = sampler.finish(bench).await?;
    settle(&bench.pool).await?;
    let drained = started.elapsed().as_secs_f64();
    let stored = received(&bench.pool).await? - stored_before;
    anyhow::ensure!(
        stored as usize == n,
        "{stored} of the {n} accepted activities are stored"
    );
    Ok(Figures {
        name: name.to_owned(),
        apis: apis.len(),
        accepted,
        seconds,
        drained,
        cpu,
        machine,
        cores: threads(),
        commits: pg_after.commits - pg_before.commits,
        wal_syncs: pg_after.wal_syncs - pg_before.wal_syncs,
        wal_sync_ms: pg_after.wal_sync_ms - pg_before.wal_sync_ms,
        wal_bytes: pg_after.wal_bytes - pg_before.wal_bytes,
    })
}

/// Sends `requests`, `CONCURRENCY` at a time; fails unless every one is
/// accepted (202). The number sent.
async fn post_all(client: &reqwest::Client, requests: Vec<Signed>) -> anyhow::Result<usize> {
    let n = requests.len();
    let statuses: Vec<anyhow::Result<u16>> = futures::stream::iter(requests)
        .map(|r| {
            let client = client.clone();
            async move { send(&client, &r.inbox, r.body, &r.headers).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let accepted = statuses.iter().filter(|s| matches!(s, Ok(202))).count();
    anyhow::ensure!(
        accepted == n,
        "only {accepted} of {n} requests were accepted: {:?}",
        statuses.iter().find(|s| !matches!(s, Ok(202)))
    );
    Ok(n)
}

/// Waits until the interpreter, the delivery planner and every projection
/// have processed the whole log, and the log has stopped growing.
async fn settle(pool: &PgPool) -> anyhow::Result<()> {
    let mut subscribers = chorus_projections::names();
    subscribers.push(chorus_api::federation::interpret::SUBSCRIBER);
    subscribers.push(chorus_workers::delivery::plan::SUBSCRIBER);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut caught_up_at = None;
    loop {
        let head = last_committed(pool).await;
        let stored = checkpoints::list(pool).await?;
        let caught_up = subscribers
            .iter()
            .all(|name| stored.iter().any(|(n, at)| n == name && *at >= head));
        if caught_up && caught_up_at == Some(head) {
            return Ok(());
        }
        caught_up_at = caught_up.then_some(head);
        anyhow::ensure!(
            Instant::now() < deadline,
            "the subscribers did not catch up with the log within 300 s: {stored:?}, head {head:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU ticks of the processes of interest, read from `/proc` every 200 ms
/// over the window, so that processes starting or ending in it (autovacuum
/// workers, new connections) count too.
struct Sampler {
    seen: Arc<Mutex<HashMap<u32, Seen>>>,
    machine_before: (u64, u64),
    started: Instant,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    sessions_before: HashMap<u32, (String, String)>,
    chorus: Vec<(u32, String)>,
}

/// A process's ticks when first seen in the window (0 if it started in
/// it) and when last seen, and its command line.
struct Seen {
    first: u64,
    last: u64,
    cmdline: String,
}

impl Sampler {
    async fn start(bench: &Bench, fleet: &Fleet) -> anyhow::Result<Self> {
        let chorus = fleet.pids();
        let mut pids: Vec<u32> = chorus.iter().map(|(pid, _)| *pid).collect();
        pids.push(std::process::id());
        let postmaster = bench.postmaster;
        let seen: Arc<Mutex<HashMap<u32, Seen>>> = Arc::default();
        let sessions_before = sessions(&bench.pool).await?;
        sample(&seen, &pids, postmaster, true);
        let machine_before = machine_ticks()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tokio::select! {
                        _ = every.tick() => sample(&seen, &pids, postmaster, false),
                        _ = &mut stopped => {
                            sample(&seen, &pids, postmaster, false);
                            return;
                        }
                    }
                }
            }
        });
        Ok(Self {
            seen,
            machine_before,
            started: Instant::now(),
            stop,
            task,
            sessions_before,
            chorus,
        })
    }

    /// Cores used over the window by label, and by the whole machine.
    async fn finish(self, bench: &Bench) -> anyhow::Result<(BTreeMap<String, f64>, f64)> {
        let _ = self.stop.send(());
        self.task.await?;
        let seconds = self.started.elapsed().as_secs_f64();
        let machine_after = machine_ticks()?;
        let mut sessions = self.sessions_before;
        sessions.extend(self::sessions(&bench.pool).await?);
        let by_pid: HashMap<u32, String> = self.chorus.iter().cloned().collect();
        let by_session: HashMap<String, String> = self
            .chorus
            .iter()
            .map(|(_, label)| (session_name(label), label.clone()))
            .collect();
        let me = std::process::id();
        let mut cpu = BTreeMap::new();
        let seen = self.seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for (pid, s) in seen.iter() {
            let label = if let Some(label) = by_pid.get(pid) {
                label.clone()
            } else if *pid == me {
                "load generator".to_owned()
            } else {
                postgres_label(*pid, s, &sessions, &by_session, &by_pid)
            };
            let cores = (s.last - s.first) as f64 / bench.ticks_per_second / seconds;
            *cpu.entry(label).or_insert(0.0) += cores;
        }
        let busy = (machine_after.0 - self.machine_before.0) as f64;
        let total = (machine_after.1 - self.machine_before.1) as f64;
        let machine = threads() as f64 * busy / total.max(1.0);
        Ok((cpu, machine))
    }
}

/// Who a Postgres process works for: the `chorus` process whose session it
/// serves (named by `application_name`, or, for a lease's session, by the
/// holder's process id), Postgres itself, or another client.
fn postgres_label(
    pid: u32,
    seen: &Seen,
    sessions: &HashMap<u32, (String, String)>,
    by_session: &HashMap<String, String>,
    by_pid: &HashMap<u32, String>,
) -> String {
    let Some((backend_type, application)) = sessions.get(&pid) else {
        // Gone before it was listed: a client's title names its database.
        return if seen.cmdline.contains(" bench ") {
            "postgres for other clients".to_owned()
        } else {
            "postgres background".to_owned()
        };
    };
    if backend_type != "client backend" {
        return "postgres background".to_owned();
    }
    let owner = by_session.get(application).cloned().or_else(|| {
        // A lease's session: `chorus ROLE HOST pid N`.
        application
            .rsplit_once(" pid ")
            .and_then(|(_, n)| n.parse().ok())
            .and_then(|n: u32| by_pid.get(&n).cloned())
    });
    match owner {
        Some(label) => format!("postgres for {label}"),
        None => "postgres for other clients".to_owned(),
    }
}

/// Every Postgres process's type and `application_name`, by pid.
async fn sessions(pool: &PgPool) -> anyhow::Result<HashMap<u32, (String, String)>> {
    let rows: Vec<(i32, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT pid, backend_type, application_name FROM pg_stat_activity")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(pid, t, a)| {
            (
                pid.unsigned_abs(),
                (t.unwrap_or_default(), a.unwrap_or_default()),
            )
        })
        .collect())
}

/// Reads the ticks of `pids`, the postmaster and its children into `seen`;
/// a process not seen before counts from its current ticks on the first
/// sample and from zero (it started in the window) afterwards.
fn sample(seen: &Mutex<HashMap<u32, Seen>>, pids: &[u32], postmaster: u32, first: bool) {
    let mut all: Vec<u32> = pids.to_vec();
    all.push(postmaster);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if stat(pid).is_some_and(|(ppid, _)| ppid == postmaster) {
                all.push(pid);
            }
        }
    }
    let Ok(mut seen) = seen.lock() else {
        return;
    };
    for pid in all {
        let Some((_, ticks)) = stat(pid) else {
            continue;
        };
        seen.entry(pid)
            .or_insert_with(|| Seen {
                first: if first { ticks } else { 0 },
                last: ticks,
                cmdline: std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " "),
            })
            .last = ticks;
    }
}

/// A process's parent and its user + system CPU ticks, from
/// `/proc/PID/stat` (the fields after the parenthesised command name:
/// state, ppid, …, utime is the 14th field of the line, stime the 15th).
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// The machine's busy and total ticks (all cores), from `/proc/stat`.
fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user).
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    anyhow::ensure!(v.len() == 8, "unexpected /proc/stat: {line}");
    let idle = v[3] + v[4];
    let total: u64 = v.iter().sum();
    Ok((total - idle, total))
}
