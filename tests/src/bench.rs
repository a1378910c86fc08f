//! Shared by the bench binaries.

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use chorus_domain::EventId;
use chorus_domain::remote::received_event_id;
use chorus_postgres::{ClusterOptions, ClusterProfile, PrivateCluster};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::remote::{RemoteActor, RemoteServer, Scheme, signed_post_headers};

/// `n` scaled by `CHORUS_BENCH_SCALE` (default 1.0; at least 1), so that a
/// bench can be smoke-run small.
pub fn scale(n: usize) -> usize {
    let factor: f64 = std::env::var("CHORUS_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * factor) as usize).max(1)
}

/// A new database `bench` on `cluster`, migrated, with a pool of
/// `connections`.
pub async fn bench_database(cluster: &PrivateCluster, connections: u32) -> anyhow::Result<PgPool> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url("postgres"))
        .await?;
    sqlx::query("CREATE DATABASE bench").execute(&admin).await?;
    admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&cluster.url("bench"))
        .await?;
    chorus_postgres::migrate::run(&pool).await?;
    Ok(pool)
}

/// Runs `bench` on a durable private cluster of its own (fsync on, as in
/// production), then stops and removes the cluster.
pub async fn on_durable_cluster<F>(name: &str, bench: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&PrivateCluster) -> anyhow::Result<()>,
{
    let dir = std::env::temp_dir().join(format!("chorus-bench-{name}-{}", std::process::id()));
    let cluster = PrivateCluster::start(&ClusterOptions {
        data_dir: dir.clone(),
        profile: ClusterProfile::Durable,
    })
    .await?;
    let result = bench(&cluster).await;
    let _ = cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A signed inbox delivery ready to send: where to, its activity id, body
/// and signature headers.
#[derive(Debug)]
pub struct Signed {
    pub inbox: String,
    pub event: EventId,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Posts `body` to `url` with the signature `headers` (the `Host` header is
/// the client's, from `url`, as the signature covers it); the status.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(String, String)],
) -> anyhow::Result<u16> {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("host") {
            request = request.header(name, value);
        }
    }
    Ok(request.send().await?.status().as_u16())
}

/// Each of `actors` follows a local account (of `locals`, in turn) through
/// `inbox`, so that its key is fetched and cached before anything is timed.
pub async fn follow_all(
    client: &reqwest::Client,
    remote: &RemoteServer,
    actors: &[RemoteActor],
    locals: &[String],
    inbox: &str,
) -> anyhow::Result<()> {
    for (i, actor) in actors.iter().enumerate() {
        let follow = json!({
            "id": format!("{}/follows/{i}", remote.base_url),
            "type": "Follow",
            "actor": actor.uri,
            "object": locals[i % locals.len()],
        });
        let body = serde_json::to_vec(&follow)?;
        let headers = signed_post_headers(actor, inbox, &body, Scheme::Cavage, chrono::Utc::now());
        let status = send(client, inbox, body, &headers).await?;
        anyhow::ensure!(status == 202, "warm-up follow answered {status}");
    }
    Ok(())
}

/// Signs `n` `Create{Note}` deliveries on all cores (about 1 KB each, a
/// fifth mentioning a local account), note `i` by actor `i % actors` to
/// `inboxes[i % inboxes]`; `tag` sets the notes' ids apart from other runs'.
pub async fn sign_notes(
    remote: &RemoteServer,
    actors: &[RemoteActor],
    locals: &[String],
    inboxes: &[String],
    tag: &str,
    n: usize,
) -> anyhow::Result<Vec<Signed>> {
    let threads = threads();
    let now = chrono::Utc::now();
    let mut tasks = Vec::new();
    for t in 0..threads {
        let actors = actors.to_vec();
        let locals = locals.to_vec();
        let inboxes = inboxes.to_vec();
        let base = format!("{}/notes/{tag}", remote.base_url);
        tasks.push(tokio::task::spawn_blocking(move || {
            (t..n)
                .step_by(threads)
                .map(|i| {
                    let actor = &actors[i % actors.len()];
                    let inbox = &inboxes[i % inboxes.len()];
                    let note = format!("{base}{i}");
                    let mention = &locals[i % locals.len()];
                    let activity = json!({
                        "@context": "https://www.w3.org/ns/activitystreams",
                        "id": format!("{note}/activity"),
                        "type": "Create",
                        "actor": actor.uri,
                        "to": ["https://www.w3.org/ns/activitystreams#Public"],
                        "object": {
                            "id": note,
                            "type": "Note",
                            "attributedTo": actor.uri,
                            "to": ["https://www.w3.org/ns/activitystreams#Public"],
                            "content": format!("<p>Note {i} from a remote server, long enough to look like a real post with a <a href=\"https://example.com/\">link</a> and a mention of <span class=\"h-card\"><a href=\"{mention}\" class=\"u-url mention\">@someone</a></span>.</p>"),
                            "tag": if i % 5 == 0 { json!([{ "type": "Mention", "href": mention }]) } else { json!([]) },
                            "published": now.to_rfc3339(),
                        },
                    });
                    let body = serde_json::to_vec(&activity).unwrap_or_default();
                    let headers = signed_post_headers(actor, inbox, &body, Scheme::Cavage, now);
                    Signed {
                        inbox: inbox.clone(),
                        event: received_event_id(activity["id"].as_str().unwrap_or_default()),
                        body,
                        headers,
                    }
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut all = Vec::with_capacity(n);
    for task in tasks {
        all.extend(task.await?);
    }
    Ok(all)
}

/// The machine's cores (2 if unknown).
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// RSA-2048 PKCS#1 v1.5 SHA-256 verifications per second on all cores:
/// the cost of an inbox's signature check, the physical limit of its path.
pub fn rsa_verify_rate() -> f64 {
    let pair =
        KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap_or_else(|e| panic!("{e}"));
    let message = b"(request-target): post /inbox\nhost: 127.0.0.1\ndate: Mon, 23 Nov 2026 19:05:11 GMT\ndigest: SHA-256=x";
    let mut sig = vec![0; pair.public_modulus_len()];
    pair.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        message,
        &mut sig,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let public = pair.public_key().as_ref().to_vec();
    let duration = Duration::from_secs(2);
    let handles: Vec<_> = (0..threads())
        .map(|_| {
            let public = public.clone();
            let sig = sig.clone();
            std::thread::spawn(move || {
                let key = UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &public);
                let started = Instant::now();
                let mut n = 0u64;
                while started.elapsed() < duration {
                    if key.verify(message, &sig).is_ok() {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / duration.as_secs_f64()
}
