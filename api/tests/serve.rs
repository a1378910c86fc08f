//! `chorus serve` end to end, through the real binary: with no configuration
//! it provisions its own Postgres cluster, applies migrations, serves, and
//! stops the cluster on SIGTERM; the data directory is kept across runs.

use chorus_tests::cli::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_postgres::{ClusterOptions, ClusterProfile, PrivateCluster};

/// A data directory the `postgres` user can reach even when tests run as root.
fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chorus-serve-test-{name}-{}", uuid_like()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

fn chorus(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chorus"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CHORUS_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

struct Server {
    child: Child,
    base: String,
    /// Its stderr.
    log: PathBuf,
}

impl Server {
    fn start(data_dir: &Path, extra: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut env = vec![
            ("CHORUS_BIND", format!("127.0.0.1:{port}")),
            ("CHORUS_BASE_URL", format!("http://127.0.0.1:{port}")),
            ("CHORUS_DATA_DIR", data_dir.display().to_string()),
        ];
        env.extend(extra.iter().cloned());
        // The server's log goes next to its data, for a look when a test fails.
        let log = std::env::temp_dir().join(format!("chorus-serve-test-{port}.log"));
        let stderr = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create the server log: {e}"));
        let child = chorus(&["serve"], &env)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chorus: {e}"));
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    async fn wait_ready(&mut self) -> serde_json::Value {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chorus serve exited early with {status}");
            }
            if let Ok(response) = client.get(format!("{}/readyz", self.base)).send().await
                && response.status().is_success()
            {
                return response.json().await.unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "chorus serve was not ready within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("chorus serve did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn cluster_running(data_dir: &Path) -> bool {
    data_dir.join("pgdata/postmaster.pid").exists()
}

#[tokio::test]
async fn serve_without_configuration_provisions_its_own_cluster_and_stops_it() {
    let dir = data_dir("private");
    let mut server = Server::start(&dir, &[]);
    let ready = server.wait_ready().await;
    assert_eq!(ready["status"], "ready");
    let health = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(health.status().is_success());
    assert!(cluster_running(&dir));
    assert!(dir.join("password").exists());

    let status = server.terminate();
    assert!(status.success(), "chorus serve exited with {status}");
    assert!(
        !cluster_running(&dir),
        "the private cluster was left running"
    );

    // Second run: the same data directory, reused rather than initialised again.
    let initialised = std::fs::metadata(dir.join("pgdata/PG_VERSION"))
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut server = Server::start(&dir, &[]);
    server.wait_ready().await;
    let again = std::fs::metadata(dir.join("pgdata/PG_VERSION"))
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(initialised, again, "the cluster was initialised again");
    assert!(server.terminate().success());
    assert!(!cluster_running(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serve_uses_database_url_when_given() {
    let cluster_dir = data_dir("external");
    let cluster = PrivateCluster::start(&ClusterOptions {
        data_dir: cluster_dir.clone(),
        profile: ClusterProfile::Ephemeral,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let unused = data_dir("unused");
    let mut server = Server::start(&unused, &[("DATABASE_URL", cluster.url("postgres"))]);
    assert_eq!(server.wait_ready().await["status"], "ready");
    assert!(server.terminate().success());
    assert!(
        !unused.join("pgdata").exists(),
        "a private cluster was provisioned despite DATABASE_URL"
    );
    // The external database was migrated and is left running.
    let pool = sqlx::PgPool::connect(&cluster.url("postgres"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("the events table is missing: {e}"));
    assert_eq!(events, 0);
    pool.close().await;
    let _ = cluster.stop().await;
    let _ = std::fs::remove_dir_all(&cluster_dir);
    let _ = std::fs::remove_dir_all(&unused);
}

#[test]
fn bad_configuration_fails_fast_with_a_clear_message() {
    let output = chorus(&["serve"], &[("CHORUS_BIND", "not-an-address".into())])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CHORUS_BIND"), "{stderr}");

    refused(
        &[(
            "DATABASE_URL",
            "postgres://chorus:secret-pw@127.0.0.1:1/none".into(),
        )],
        "cannot connect to the database at 127.0.0.1:1/none",
        "secret-pw",
    );
}

/// `chorus serve` with `env` fails, saying `says`, and never shows `secret`.
fn refused(env: &[(&str, String)], says: &str, secret: &str) {
    let mut env = env.to_vec();
    env.push(("CHORUS_BIND", format!("127.0.0.1:{}", free_port())));
    let output = chorus(&["serve"], &env)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(says), "{stderr}");
    assert!(!stderr.contains(secret), "the password leaked: {stderr}");
}

/// A gauge from `server`'s `/metrics`, `None` when it is not there.
async fn gauge(server: &Server, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", server.base))
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (up to a minute) until `server`'s queries read from its replica,
/// or with `false`, from the primary.
async fn until_replica_in_use(server: &Server, in_use: bool) {
    let want = if in_use { 1.0 } else { 0.0 };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = gauge(server, "chorus_read_replica_in_use").await;
        if seen == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chorus_read_replica_in_use still {seen:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serve_reads_from_database_read_url_while_it_is_up() {
    let replicated = chorus_tests::replica::Replicated::start().await;
    let db = chorus_tests::pg::empty_db_on(&replicated.primary_admin_url()).await;
    let read_url = replicated.standby_url(&db.name);
    let parsed = url::Url::parse(&read_url).unwrap_or_else(|e| panic!("{e}"));
    let password = parsed
        .password()
        .unwrap_or_else(|| panic!("the standby's URL has no password"))
        .to_owned();
    let replica = format!(
        "127.0.0.1:{}/{}",
        parsed.port().unwrap_or_default(),
        db.name
    );

    // A read URL that is not one is refused, without showing it.
    refused(
        &[
            ("DATABASE_URL", db.url.clone()),
            (
                "DATABASE_READ_URL",
                format!("postgres://u:{password}@127.0.0.1:port/x"),
            ),
        ],
        "DATABASE_READ_URL is not a valid Postgres URL",
        &password,
    );

    let unused = data_dir("replica");
    let mut server = Server::start(
        &unused,
        &[
            ("DATABASE_URL", db.url.clone()),
            ("DATABASE_READ_URL", read_url),
            ("CHORUS_READ_MAX_LAG_MS", "5000".into()),
        ],
    );
    assert_eq!(server.wait_ready().await["status"], "ready");
    until_replica_in_use(&server, true).await;
    assert_eq!(
        gauge(&server, "chorus_read_replica_max_lag_seconds").await,
        Some(5.0)
    );
    replicated.stop_standby().await;
    until_replica_in_use(&server, false).await;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/graphql", server.base))
        .json(&serde_json::json!({ "query": "{ servers { name } }" }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("POST /graphql: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("POST /graphql: {e}"));
    assert_eq!(answer, serde_json::json!({ "data": { "servers": [] } }));
    let log_path = server.log.clone();
    assert!(server.terminate().success());

    let log = std::fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!log.contains(&password), "the password leaked: {log}");
    // The replica is named by host, port and database only.
    assert!(
        log.lines().any(
            |l| l.contains("GraphQL queries may read from the read replica")
                && l.contains(&replica)
        ),
        "{log}"
    );
    // Each switch is logged once: to the replica once it was in use, to the
    // primary once it was stopped, and (should a loaded machine have made
    // it lag meanwhile) never twice the same way in a row.
    let switches: Vec<bool> = log
        .lines()
        .filter_map(|line| {
            if line.contains("reads go to the read replica") {
                Some(true)
            } else if line.contains("reads go to the primary") {
                Some(false)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(switches.first(), Some(&true), "{log}");
    assert_eq!(switches.last(), Some(&false), "{log}");
    assert!(switches.windows(2).all(|w| w[0] != w[1]), "{log}");
    assert!(
        log.lines()
            .rfind(|l| l.contains("reads go to the primary"))
            .is_some_and(|l| l.contains("the read replica cannot be reached")),
        "{log}"
    );
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_dir_all(&unused);
}
