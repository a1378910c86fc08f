//! `chorus instances block|unblock|list`, through the real binary against a
//! real database.

use std::process::{Command, Stdio};

use chorus_postgres::{ClusterOptions, ClusterProfile, PrivateCluster};

fn chorus(args: &[&str], database_url: &str) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("CHORUS_CONFIG")
        .env("CHORUS_BASE_URL", "http://chorus.test")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run chorus: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn instances_are_blocked_listed_and_unblocked_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("chorus-instances-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = PrivateCluster::start(&ClusterOptions {
        data_dir: dir.clone(),
        profile: ClusterProfile::Ephemeral,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url("postgres");
    assert!(chorus(&["migrate"], &url).0);

    let (ok, out, err) = chorus(&["instances", "list"], &url);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "no instance is blocked");

    let (ok, out, err) = chorus(
        &["instances", "block", "Spam.Example.", "--reason", "spam"],
        &url,
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "blocked spam.example");
    let (ok, out, _) = chorus(&["instances", "list"], &url);
    assert!(ok);
    assert_eq!(out.trim(), "spam.example\tspam");

    // Refusals say why and change nothing.
    let (ok, _, err) = chorus(&["instances", "block", "spam.example"], &url);
    assert!(!ok);
    assert!(err.contains("already blocked"), "{err}");
    let (ok, _, err) = chorus(&["instances", "block", "https://evil.example/"], &url);
    assert!(!ok);
    assert!(err.contains("not a domain name"), "{err}");
    let (ok, _, err) = chorus(&["instances", "block", "chorus.test"], &url);
    assert!(!ok);
    assert!(err.contains("own domain"), "{err}");

    let (ok, out, err) = chorus(&["instances", "unblock", "spam.example"], &url);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "unblocked spam.example");
    let (ok, out, _) = chorus(&["instances", "list"], &url);
    assert!(ok);
    assert_eq!(out.trim(), "no instance is blocked");
    let (ok, _, err) = chorus(&["instances", "unblock", "spam.example"], &url);
    assert!(!ok);
    assert!(err.contains("not blocked"), "{err}");

    let _ = cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
