//! The `chorus` binary run as an operator runs it, against the database of
//! a test server.

use std::process::{Command, Stdio};

use crate::app::TestApp;

/// Runs `binary ARGS…` (the `chorus` binary: `env!("CARGO_BIN_EXE_chorus")`
/// in the tests of `chorus-api`) against `app`'s database and base URL; its
/// exit code, stdout and stderr.
pub fn run(binary: &str, app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(binary)
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env_remove("CHORUS_CONFIG")
        .env("CHORUS_BASE_URL", &app.base_url)
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
