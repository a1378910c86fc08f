//! Many `chorus serve` processes against one database, as a deployment over
//! several machines runs them: two `api`, two `worker` and two `projector`
//! processes, under inbox and mutation load. The worker running the
//! delivery planner and the projector running the posts projection are
//! killed with SIGKILL mid-run; the others take their leases over within
//! seconds, nothing is lost, nothing is delivered twice (beyond what was in
//! flight at the kill, which at-least-once delivery sends again), and the
//! read models equal a rebuild from zero at the end.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chorus_api::roles::{MIRROR_LEASE, all_leases};
use chorus_postgres::leases::holders;
use chorus_tests::cli::{create_account, free_port, run_at, wait_ready};
use chorus_tests::history::read_models;
use chorus_tests::pg::test_db;
use chorus_tests::poll::until as eventually;
use chorus_tests::remote::{KeyStyle, RemoteActor, RemoteServer, deliver};
use chorus_tests::sink::Sink;
use serde_json::{Value, json};
use sqlx::PgPool;

/// Remote followers of alice, each with an inbox of its own on the sink.
const FOLLOWERS: usize = 4;
/// Posts alice makes through the two api processes.
const POSTS: usize = 40;

/// One `chorus` process of `role`, its public address `base` (what a load
/// balancer would answer on), listening on `port` if it serves HTTP.
fn chorus(database_url: &str, base: &str, role: &str, port: u16, env: &[(&str, &str)]) -> Child {
    let logs = if std::env::var_os("CHORUS_TEST_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["serve", "--role", role])
        .env_remove("CHORUS_CONFIG")
        .envs(env.iter().copied())
        .env("DATABASE_URL", database_url)
        .env("CHORUS_BIND", format!("127.0.0.1:{port}"))
        .env("CHORUS_BASE_URL", base)
        .env("CHORUS_ALLOW_PRIVATE_ADDRESSES", "true")
        // A job leased by a killed worker is sent again once its lease
        // runs out: short, so that the test does not wait long.
        .env("CHORUS_REQUEST_TIMEOUT_SECS", "3")
        .env("CHORUS_DELIVERY_LEASE_SECS", "7")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logs)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chorus serve --role {role}: {e}"))
}

/// The processes started; all killed when dropped, a failed test too.
#[derive(Default)]
struct Fleet(Vec<Child>);

impl Fleet {
    fn start(&mut self, child: Child) -> u32 {
        let pid = child.id();
        self.0.push(child);
        pid
    }

    fn child(&mut self, pid: u32) -> &mut Child {
        self.0
            .iter_mut()
            .find(|c| c.id() == pid)
            .unwrap_or_else(|| panic!("no process {pid}"))
    }

    fn kill(&mut self, pid: u32) {
        let at = self
            .0
            .iter()
            .position(|c| c.id() == pid)
            .unwrap_or_else(|| panic!("no process {pid} among them"));
        let mut child = self.0.remove(at);
        child.kill().unwrap_or_else(|e| panic!("{e}"));
        let _ = child.wait();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Who holds each lease: the holder's server process id, by lease.
async fn lease_pids(pool: &PgPool, mirrored: bool) -> HashMap<String, Option<String>> {
    let mut leases = all_leases();
    if mirrored {
        leases.push(MIRROR_LEASE.to_owned());
    }
    holders(pool, &leases)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(lease, holder)| (lease, holder.map(|(name, _)| name)))
        .collect()
}

/// The OS process id a lease holder's session names (`chorus ROLE HOST pid N`).
fn holder_pid(holder: &str) -> u32 {
    holder
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in lease holder {holder:?}"))
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[derive(Clone)]
struct Load {
    client: reqwest::Client,
    apis: [String; 2],
    token: String,
    followers: Vec<RemoteActor>,
    remote_base: String,
}

impl Load {
    /// Alice posts post `n` through api `n % 2`; the answer comes once the
    /// read models show it, so the other api must find it at once.
    async fn post(&self, n: usize) -> String {
        let (here, there) = (&self.apis[n % 2], &self.apis[(n + 1) % 2]);
        let response: Value = self
            .client
            .post(format!("{here}/graphql"))
            .bearer_auth(&self.token)
            .json(&json!({
                "query": "mutation($t: String!) { createPost(input: { text: $t }) { id uri } }",
                "variables": { "t": format!("post {n}") },
            }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(response["errors"].is_null(), "{response}");
        let id = response["data"]["createPost"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{response}"))
            .to_owned();
        let uri = response["data"]["createPost"]["uri"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let seen: Value = self
            .client
            .post(format!("{there}/graphql"))
            .bearer_auth(&self.token)
            .json(&json!({
                "query": "query($id: ID!) { post(id: $id) { id } }",
                "variables": { "id": id },
            }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            seen["data"]["post"]["id"].as_str(),
            Some(id.as_str()),
            "post {n}, answered by {here}, not found by {there}: {seen}"
        );
        uri
    }

    /// Follower `n % FOLLOWERS` sends a note, to api `n % 2`'s inbox.
    async fn note(&self, n: usize) {
        let follower = &self.followers[n % FOLLOWERS];
        let note = format!("{}/notes/{n}", self.remote_base);
        let create = json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("{note}/activity"),
            "type": "Create",
            "actor": follower.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "object": {
                "id": note,
                "type": "Note",
                "attributedTo": follower.uri,
                "to": ["https://www.w3.org/ns/activitystreams#Public"],
                "content": format!("<p>note {n}</p>"),
                "published": "2026-12-06T10:00:00Z",
            },
        });
        let inbox = format!("{}/inbox", self.apis[n % 2]);
        let (status, body) = deliver(&self.client, follower, &inbox, &create).await;
        assert_eq!(status, 202, "note {n}: {body}");
    }

    /// Follower `n % FOLLOWERS` likes `post`.
    async fn like(&self, n: usize, post: &str) {
        let follower = &self.followers[n % FOLLOWERS];
        let like = json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("{}#likes/{n}", follower.uri),
            "type": "Like",
            "actor": follower.uri,
            "object": post,
        });
        let inbox = format!("{}/inbox", self.apis[(n + 1) % 2]);
        let (status, body) = deliver(&self.client, follower, &inbox, &like).await;
        assert_eq!(status, 202, "like {n}: {body}");
    }

    /// Posts `range`, each followed by a like of it and a follower's note.
    async fn run(&self, range: std::ops::Range<usize>) {
        let load = range.map(|n| async move {
            let post = self.post(n).await;
            self.like(n, &post).await;
            self.note(n).await;
        });
        futures::stream::iter(load)
            .buffer_unordered(4)
            .collect::<Vec<()>>()
            .await;
    }
}

use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_killed_mid_run_are_taken_over_and_nothing_is_lost_or_sent_twice() {
    under_load_with_kills(None).await;
}

/// The same with another database as the log of record: every append goes
/// there first, and the mirror copying it into the server's database runs
/// under its lease in the projector that is killed, so it is taken over
/// too; at the end both logs are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_log_of_record_elsewhere_its_mirror_is_taken_over_too() {
    let of_record = test_db().await;
    let db = under_load_with_kills(Some(&of_record.url)).await;
    let log = |pool: PgPool| async move {
        let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT event_id::text, stream_id, stream_version, payload::text
             FROM events ORDER BY transaction_id, seq",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        rows
    };
    let (mirror, record) = (
        log(db.pool.clone()).await,
        log(of_record.pool.clone()).await,
    );
    assert!(
        record.len() > POSTS * 3,
        "{} events of record",
        record.len()
    );
    assert!(
        mirror == record,
        "the mirror differs from the log of record"
    );
}

/// Runs the fleet under load, kills a worker and a projector mid-run,
/// checks what the test's header says; returns the server's database.
async fn under_load_with_kills(of_record: Option<&str>) -> chorus_tests::pg::TestDb {
    let db = test_db().await;
    let env: Vec<(&str, &str)> = of_record
        .map(|url| ("CHORUS_EVENT_STORE", url))
        .into_iter()
        .collect();
    let mirrored = of_record.is_some();
    let pool = PgPool::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ports = [free_port(), free_port()];
    let apis = ports.map(|p| format!("http://127.0.0.1:{p}"));
    // Both api processes stand behind one public address.
    let base = apis[0].clone();

    let token = create_account(env!("CARGO_BIN_EXE_chorus"), &db.url, &base, "alice", &env);
    let alice = format!("{base}/users/alice");

    // One projector first, so that it takes every projection's lease (and
    // the mirror's): the one killed below.
    let mut fleet = Fleet::default();
    let first = fleet.start(chorus(&db.url, &base, "projector", free_port(), &env));
    eventually(60, "the first projector never took its leases", || async {
        let leases = lease_pids(&pool, mirrored).await;
        leases
            .iter()
            .filter(|(lease, _)| lease.starts_with("projection:") || *lease == MIRROR_LEASE)
            .all(|(_, holder)| holder.as_deref().is_some_and(|h| holder_pid(h) == first))
    })
    .await;
    let api = ports.map(|port| fleet.start(chorus(&db.url, &base, "api", port, &env)));
    for role in ["worker", "worker", "projector"] {
        fleet.start(chorus(&db.url, &base, role, free_port(), &env));
    }
    for (pid, address) in api.iter().zip(&apis) {
        wait_ready(fleet.child(*pid), address).await;
    }
    eventually(60, "the leases were never all taken", || async {
        lease_pids(&pool, mirrored)
            .await
            .values()
            .all(Option::is_some)
    })
    .await;
    // Every lease is held once, by a process of the right role.
    for (lease, holder) in lease_pids(&pool, mirrored).await {
        let holder = holder.unwrap_or_default();
        let role = if lease.starts_with("projection:") || lease == MIRROR_LEASE {
            "projector"
        } else {
            "worker"
        };
        assert!(
            holder.starts_with(&format!("chorus {role} ")),
            "{lease} is held by {holder}"
        );
    }

    // Remote followers, their inboxes on the sink.
    let sink = Sink::start().await;
    let remote = RemoteServer::start().await;
    let client = reqwest::Client::new();
    let mut followers = Vec::new();
    for n in 0..FOLLOWERS {
        let name = format!("f{n}");
        let actor = remote.actor(&name, n, KeyStyle::Fragment);
        remote.patch_actor(
            &name,
            json!({ "inbox": format!("{}/users/{name}/inbox", sink.base_url), "endpoints": {} }),
        );
        let follow = json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": format!("{}#follow", actor.uri),
            "type": "Follow",
            "actor": actor.uri,
            "object": alice,
        });
        let inbox = format!("{}/inbox", apis[n % 2]);
        let (status, body) = deliver(&client, &actor, &inbox, &follow).await;
        assert_eq!(status, 202, "{body}");
        followers.push(actor);
    }
    eventually(60, "alice never had her followers", || async {
        count(
            &pool,
            "SELECT count(*) FROM follows WHERE followee LIKE '%/users/alice' AND state = 'accepted'",
        )
        .await
            == FOLLOWERS as i64
    })
    .await;

    let load = Load {
        client: client.clone(),
        apis: apis.clone(),
        token,
        followers,
        remote_base: remote.base_url.clone(),
    };
    load.run(0..POSTS / 2).await;

    // Mid-run: kill the worker planning deliveries and the projector
    // running the posts projection, with deliveries still going out.
    let leases = lease_pids(&pool, mirrored).await;
    let planner_pid = holder_pid(leases["deliveries"].as_deref().unwrap_or_default());
    let posts_pid = holder_pid(leases["projection:posts"].as_deref().unwrap_or_default());
    let killed = [planner_pid, posts_pid];
    let more = tokio::spawn({
        let load = load.clone();
        async move { load.run(POSTS / 2..POSTS).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    fleet.kill(planner_pid);
    fleet.kill(posts_pid);
    let killed_at = std::time::Instant::now();
    // Jobs a killed worker had leased may have reached their inbox without
    // being recorded: those, and only those, may arrive twice.
    let in_flight: HashSet<(String, String)> = sqlx::query_as(
        "SELECT a.activity_id, j.inbox FROM delivery_jobs j JOIN delivery_activities a USING (event_id)
         WHERE j.state = 'pending' AND j.leased_until > now()",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .into_iter()
    .collect();

    eventually(
        20,
        "the killed processes' leases were not taken over",
        || async {
            lease_pids(&pool, mirrored).await.values().all(|holder| {
                holder
                    .as_deref()
                    .is_some_and(|h| !killed.contains(&holder_pid(h)))
            })
        },
    )
    .await;
    let taken_over = killed_at.elapsed();
    assert!(
        taken_over < Duration::from_secs(10),
        "takeover took {taken_over:?}"
    );
    eprintln!(
        "leases taken over {taken_over:?} after the kill; {} deliveries were in flight",
        in_flight.len()
    );
    more.await.unwrap_or_else(|e| panic!("{e}"));
    // Operators see every lease held, on either api process.
    let metrics = client
        .get(format!("{}/metrics", apis[1]))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    for lease in all_leases() {
        let line = format!("chorus_lease_held{{lease=\"{lease}\"}} 1");
        assert!(metrics.contains(&line), "no {line:?} in /metrics");
    }
    let (code, listed, err) = run_at(
        env!("CARGO_BIN_EXE_chorus"),
        &db.url,
        &base,
        &["projections", "list"],
        &env,
    );
    assert_eq!(code, Some(0), "{err}");
    for name in chorus_projections::names() {
        let line = listed
            .lines()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"));
        assert!(line.contains("\trun by chorus projector "), "{line}");
    }

    // Nothing lost: every post, note and like is in the read models.
    let counts = || async {
        [
            count(
                &pool,
                "SELECT count(*) FROM posts WHERE author LIKE '%/users/alice'",
            )
            .await,
            count(
                &pool,
                "SELECT count(*) FROM posts WHERE author NOT LIKE '%/users/alice'",
            )
            .await,
            count(&pool, "SELECT count(*) FROM favorites").await,
        ]
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counts().await != [POSTS as i64; 3] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice's posts, notes, likes: {:?}, expected {POSTS} each",
            counts().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every job delivered: each post and each Accept, to each follower.
    let expected = (POSTS * FOLLOWERS + FOLLOWERS) as i64;
    eventually(60, "not every delivery was made", || async {
        count(
            &pool,
            "SELECT count(*) FROM delivery_jobs WHERE state = 'delivered'",
        )
        .await
            == expected
            && count(&pool, "SELECT count(*) FROM delivery_jobs").await == expected
    })
    .await;
    let mut arrived: HashMap<(String, String), usize> = HashMap::new();
    for delivery in sink.deliveries() {
        let id = delivery.body["id"].as_str().unwrap_or_default().to_owned();
        let inbox = format!("{}{}", sink.base_url, delivery.path);
        *arrived.entry((id, inbox)).or_default() += 1;
    }
    assert_eq!(arrived.len() as i64, expected, "distinct deliveries");
    let repeated: Vec<_> = arrived.iter().filter(|(_, n)| **n > 1).collect();
    for ((id, inbox), n) in &repeated {
        assert!(
            **n == 2 && in_flight.contains(&(id.clone(), inbox.clone())),
            "{id} reached {inbox} {n} times and was not in flight at the kill"
        );
    }
    // Every received activity was stored once and none was refused.
    let received = (FOLLOWERS + 2 * POSTS) as i64;
    eventually(30, "not every received activity was recorded", || async {
        count(&pool, "SELECT count(*) FROM received_activities").await == received
    })
    .await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM received_activities WHERE outcome IS NOT NULL"
        )
        .await,
        0
    );

    // The read models equal a rebuild from zero, once every projection has
    // read the whole log.
    let head = chorus_tests::app::last_committed(&pool).await;
    eventually(30, "the projections never caught up", || async {
        let stored = chorus_postgres::checkpoints::list(&pool)
            .await
            .unwrap_or_default();
        chorus_projections::names()
            .iter()
            .all(|name| stored.iter().any(|(n, at)| n == name && *at >= head))
    })
    .await;
    let live = read_models(&pool).await;
    let (code, _, err) = run_at(
        env!("CARGO_BIN_EXE_chorus"),
        &db.url,
        &base,
        &["projections", "rebuild", "--all"],
        &env,
    );
    assert_eq!(code, Some(0), "{err}");
    // The rebuild's own events are counted by `activity_stats` once it has
    // read them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut from_zero = read_models(&pool).await;
    while from_zero != live && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        from_zero = read_models(&pool).await;
    }
    assert!(
        live == from_zero,
        "live and rebuilt read models differ: only live {:?}, only rebuilt {:?}",
        live.iter()
            .filter(|row| !from_zero.contains(row))
            .take(5)
            .collect::<Vec<_>>(),
        from_zero
            .iter()
            .filter(|row| !live.contains(row))
            .take(5)
            .collect::<Vec<_>>()
    );
    db
}
