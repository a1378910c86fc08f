//! `chorus deliveries …`, through the real binary against the database of
//! a running Chorus whose deliveries fail and are then sent again.

use chorus_tests::app::{TestApp, spawn_app};
use chorus_tests::outbound::{deliveries, follow, remote_follower, trust_local};
use chorus_tests::remote::RemoteServer;
use chorus_tests::sink::Sink;
use serde_json::Value;

fn chorus(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let args = [&["deliveries"], args].concat();
    let (code, out, err) = chorus_tests::cli::run(env!("CARGO_BIN_EXE_chorus"), app, &args);
    (code == Some(0), out, err)
}

fn ok(app: &TestApp, args: &[&str]) -> String {
    let (ok, out, err) = chorus(app, args);
    assert!(ok, "chorus deliveries {args:?} failed: {err}");
    out
}

// Several threads: `chorus` runs as a blocking child process, and the
// server's senders must finish their transactions meanwhile (a command
// waits for a row lock one of them holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_queue_is_inspected_and_acted_on_from_the_command_line() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let sink = Sink::start().await;
    trust_local(&app, &sink, &alice.uri).await;
    let bob = remote_follower(&app, &remote, &sink.base_url, "bob").await;
    let host = sink.base_url.trim_start_matches("http://").to_owned();

    assert_eq!(
        ok(&app, &["summary"]),
        "pending 0 (due now 0)\ndelivered 0\ndead 0\n"
    );

    // The automatic Accept is refused for good.
    sink.fail(403, 1);
    follow(&app, &bob, &alice.uri, 1).await;
    deliveries(&sink, 1).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while ok(&app, &["summary"]) != "pending 0 (due now 0)\ndelivered 0\ndead 1\n" {
        assert!(tokio::time::Instant::now() < deadline, "the job never died");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let listed = ok(&app, &["list", "--state", "dead", "--json"]);
    let jobs: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(jobs.len(), 1, "{listed}");
    assert_eq!(jobs[0]["activity_type"], "Accept");
    assert_eq!(jobs[0]["last_status"], 403);
    assert_eq!(jobs[0]["host"], host.as_str());
    let accept = jobs[0]["activity_id"].as_str().unwrap_or_default();
    let text = ok(&app, &["list", "--host", &host]);
    assert!(
        text.contains("dead\t1 attempt(s)\tstatus 403\tAccept"),
        "{text}"
    );
    assert_eq!(
        ok(&app, &["list", "--state", "pending"]),
        "no job matches\n"
    );
    // A 403 says nothing about the host's health.
    assert_eq!(ok(&app, &["hosts"]), "no failing host\n");

    // Sent again, this time received.
    assert_eq!(
        ok(&app, &["redeliver", accept]),
        format!("queued 1 job(s) for {accept}\n")
    );
    let got = deliveries(&sink, 2).await;
    assert_eq!(got[1].body["id"], accept);
    assert!(got[1].verified.is_ok(), "{:?}", got[1].verified);

    assert_eq!(ok(&app, &["trust", &host]), format!("{host} is trusted\n"));
    let trusted = ok(&app, &["hosts", "--trusted", "--json"]);
    assert!(
        trusted.contains(&format!("\"host\":\"{host}\"")),
        "{trusted}"
    );
    assert_eq!(
        ok(&app, &["untrust", &host]),
        format!("{host} is not trusted\n")
    );
    assert_eq!(ok(&app, &["hosts", "--trusted"]), "no trusted host\n");

    // Wrong input is refused with the reason, and changes nothing.
    let (success, _, err) = chorus(&app, &["retry-host", "x.example/inbox"]);
    assert!(!success);
    assert!(err.contains("invalid host"), "{err}");
    let (success, _, err) = chorus(&app, &["redeliver", "https://nowhere.example/a"]);
    assert!(!success);
    assert!(err.contains("no outbound activity"), "{err}");
    let (success, _, err) = chorus(&app, &["purge", "sent"]);
    assert!(!success);
    assert!(err.contains("pending, delivered or dead"), "{err}");

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ok(&app, &["summary"]).contains("delivered 1") {
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        ok(&app, &["purge", "delivered"]),
        "purged 1 delivered job(s)\n"
    );
    assert_eq!(
        ok(&app, &["summary"]),
        "pending 0 (due now 0)\ndelivered 0\ndead 0\n"
    );
}
