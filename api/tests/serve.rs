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
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("chorus-serve-test-{port}.log")),
        )
        .unwrap_or_else(|e| panic!("cannot create the server log: {e}"));
        let child = chorus(&["serve"], &env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chorus: {e}"));
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
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

    let output = chorus(
        &["serve"],
        &[
            (
                "DATABASE_URL",
                "postgres://chorus:secret-pw@127.0.0.1:1/none".into(),
            ),
            ("CHORUS_BIND", format!("127.0.0.1:{}", free_port())),
        ],
    )
    .output()
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to the database at 127.0.0.1:1/none"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret-pw"),
        "the password leaked: {stderr}"
    );
}
