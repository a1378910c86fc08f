//! The `chorus` binary run as an operator runs it, against the database of
//! a test server.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::app::TestApp;

/// Runs `binary ARGS…` (the `chorus` binary: `env!("CARGO_BIN_EXE_chorus")`
/// in the tests of `chorus-api`) against `app`'s database and base URL; its
/// exit code, stdout and stderr.
pub fn run(binary: &str, app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    run_at(binary, &app.database_url, &app.base_url, args, &[])
}

/// Runs `binary ARGS…` against the database at `database_url`, for a
/// server whose public address is `base_url`, with `env` set besides.
pub fn run_at(
    binary: &str,
    database_url: &str,
    base_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let output = Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .env("DATABASE_URL", database_url)
        .env_remove("CHORUS_CONFIG")
        .env("CHORUS_BASE_URL", base_url)
        .env("CHORUS_ALLOW_PRIVATE_ADDRESSES", "true")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Creates the local account `handle` with `chorus accounts create`;
/// returns its API token.
pub fn create_account(
    binary: &str,
    database_url: &str,
    base_url: &str,
    handle: &str,
    env: &[(&str, &str)],
) -> String {
    let (code, printed, err) = run_at(
        binary,
        database_url,
        base_url,
        &["accounts", "create", handle],
        env,
    );
    assert_eq!(code, Some(0), "{err}");
    printed
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no token in {printed:?}"))
        .to_owned()
}

/// A free TCP port on 127.0.0.1 (free when asked; a server binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the `chorus serve` process `child` answers `/readyz` at
/// `base`; fails if it exits first or takes over a minute.
pub async fn wait_ready(child: &mut Child, base: &str) {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("chorus serve exited early with {status}");
        }
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chorus serve at {base} was not ready within 60 s");
}
