//! A busy server's log of follows, favorites, reblogs, blocks and deleted
//! posts and actors, made up and written quickly, for the benchmarks that
//! read a large log (`rebuild`, `stream`).
//!
//! Follow requests, then their answers, then undos, favorites and reblogs
//! of 200,000 posts by 20,000 actors (both scaled by `CHORUS_BENCH_SCALE`),
//! blocks, and deleted posts and actors, each kind interleaved at random
//! and each stage far from the one before (so a pair's events rarely share
//! a batch). Payloads are the documents the domain builds
//! (`activitypub::activity`).

use chorus_domain::StreamId;
use chorus_domain::activitypub::{PUBLIC, activity, undo};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::bench::scale;

/// One event to seed: its stream, version in the stream, type and payload.
#[derive(Debug)]
pub struct Seed {
    pub stream: String,
    pub version: i64,
    pub kind: &'static str,
    pub payload: Value,
}

fn actor(i: usize) -> String {
    format!("https://host{}.example/users/user{i}", i % 300)
}

fn post(i: usize) -> String {
    format!(
        "https://host{}.example/users/user{}/statuses/{i}",
        i % 300,
        i % 20_000
    )
}

fn key(uri: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, uri.as_bytes())
}

fn pair_stream(prefix: &str, a: &str, b: &str) -> String {
    let (k1, k2) = (key(a), key(b));
    let (k1, k2) = if k1 <= k2 { (k1, k2) } else { (k2, k1) };
    format!("{prefix}-{k1}-{k2}")
}

/// The log, in stages; each stage's events in random order.
pub fn log(total: usize, rng: &mut StdRng) -> Vec<Vec<Seed>> {
    let actors = scale(20_000).max(10);
    let posts = scale(200_000).max(10);
    let share = |f: f64| (total as f64 * f) as usize;
    let (follows, favorites, reblogs, blocks) =
        (share(0.15), share(0.43), share(0.15), share(0.04));
    let followers = |i: usize| format!("{}/followers", actor(i));
    let mut stages: Vec<Vec<Seed>> = vec![Vec::new(), Vec::new(), Vec::new()];

    let mut pairs = std::collections::HashSet::new();
    let mut pick = |rng: &mut StdRng, range_b: usize| loop {
        let (a, b) = (rng.random_range(0..actors), rng.random_range(0..range_b));
        // Two actors share one relationship stream, whichever way round.
        let pair = if range_b == actors {
            (a.min(b), a.max(b))
        } else {
            (a, b)
        };
        if a != b && pairs.insert((pair.0, pair.1, range_b)) {
            return (a, b);
        }
    };
    for n in 0..follows {
        let (a, b) = pick(rng, actors);
        let (follower, followee) = (actor(a), actor(b));
        let stream = pair_stream("relationship", &follower, &followee);
        let id = format!("{follower}#follows/{n}");
        let follow = activity(
            &id,
            "Follow",
            &follower,
            json!(followee),
            std::slice::from_ref(&followee),
            &[],
        );
        let payload = json!({"follower": follower, "followee": followee, "follow_id": id, "activity": follow});
        stages[0].push(Seed {
            stream: stream.clone(),
            version: 1,
            kind: "FollowRequested",
            payload,
        });
        let answer = rng.random_range(0..100);
        let (kind, accept) = if answer < 95 {
            ("FollowAccepted", "Accept")
        } else {
            ("FollowRejected", "Reject")
        };
        let answered = activity(
            &format!("{followee}#accepts/{n}"),
            accept,
            &followee,
            follow.clone(),
            std::slice::from_ref(&follower),
            &[],
        );
        stages[1].push(Seed {
            stream: stream.clone(),
            version: 2,
            kind,
            payload: json!({"follower": follower, "followee": followee, "follow_id": id, "automatic": true, "activity": answered}),
        });
        if kind == "FollowAccepted" && answer < 10 {
            let undone = undo(
                &format!("{follower}#follows/{n}/undo"),
                &follower,
                follow,
                std::slice::from_ref(&followee),
                &[],
            );
            stages[2].push(Seed {
                stream,
                version: 3,
                kind: "Unfollowed",
                payload: json!({"follower": follower, "followee": followee, "follow_id": id, "activity": undone}),
            });
        } else if kind == "FollowAccepted" && answer < 12 {
            stages[2].push(Seed {
                stream,
                version: 3,
                kind: "FollowSevered",
                payload: json!({"follower": follower, "followee": followee, "follow_id": id}),
            });
        }
    }
    for (count, prefix, begins, ends, field, kind) in [
        (
            favorites,
            "favorite",
            "Favorited",
            "Unfavorited",
            "like_id",
            "Like",
        ),
        (
            reblogs,
            "reblog",
            "Reblogged",
            "Unreblogged",
            "announce_id",
            "Announce",
        ),
    ] {
        for n in 0..count {
            let (a, p) = pick(rng, posts);
            let (who, what) = (actor(a), post(p));
            let author = actor(p % 20_000 % actors);
            let stream = pair_stream(prefix, &who, &what);
            let id = format!("{who}#{prefix}s/{n}");
            let act = activity(
                &id,
                kind,
                &who,
                json!(what),
                &[PUBLIC.to_owned()],
                &[author.clone(), followers(a)],
            );
            let mut payload = json!({"actor": who, "post": what, "post_author": author, field: id, "activity": act});
            if begins == "Reblogged" {
                payload["published"] = json!("2026-12-03T10:00:00.000Z");
            }
            stages[0].push(Seed {
                stream: stream.clone(),
                version: 1,
                kind: begins,
                payload,
            });
            if rng.random_range(0..10) == 0 {
                let undone = undo(
                    &format!("{id}/undo"),
                    &who,
                    act,
                    &[PUBLIC.to_owned()],
                    std::slice::from_ref(&author),
                );
                stages[2].push(Seed {
                    stream,
                    version: 2,
                    kind: ends,
                    payload: json!({"actor": who, "post": what, "post_author": author, field: id, "activity": undone}),
                });
            }
        }
    }
    for n in 0..blocks {
        let (a, b) = pick(rng, actors);
        let (blocker, blocked) = (actor(a), actor(b));
        let stream = pair_stream("relationship-block", &blocker, &blocked);
        let id = format!("{blocker}#blocks/{n}");
        let act = activity(
            &id,
            "Block",
            &blocker,
            json!(blocked),
            std::slice::from_ref(&blocked),
            &[],
        );
        stages[0].push(Seed {
            stream: stream.clone(),
            version: 1,
            kind: "Blocked",
            payload: json!({"blocker": blocker, "blocked": blocked, "block_id": id, "activity": act.clone()}),
        });
        if rng.random_range(0..10) == 0 {
            let undone = undo(
                &format!("{id}/undo"),
                &blocker,
                act,
                std::slice::from_ref(&blocked),
                &[],
            );
            stages[2].push(Seed {
                stream,
                version: 2,
                kind: "Unblocked",
                payload: json!({"blocker": blocker, "blocked": blocked, "block_id": id, "activity": undone}),
            });
        }
    }
    // Deleted posts and actors (remote Deletes), to fill the log up.
    let seeded: usize = stages.iter().map(Vec::len).sum();
    let deletes = total.saturating_sub(seeded);
    for n in 0..deletes {
        if n % 20 == 0 {
            let uri = actor(rng.random_range(0..actors));
            stages[2].push(Seed {
                stream: format!("remote-actor-deleted-{n}"),
                version: 1,
                kind: "RemoteActorDeleted",
                payload: json!({"uri": uri, "deleted_at": "2026-12-03T11:00:00Z"}),
            });
        } else {
            let p = rng.random_range(0..posts);
            stages[2].push(Seed {
                stream: format!("remote-post-deleted-{n}"),
                version: 1,
                kind: "RemotePostDeleted",
                payload: json!({"uri": post(p), "author": actor(p % 20_000 % actors), "deleted_at": "2026-12-03T11:00:00Z"}),
            });
        }
    }
    for stage in &mut stages {
        stage.shuffle(rng);
    }
    stages
}

/// Writes the seeds as the store writes events (one transaction id per
/// batch), 5,000 rows a statement: seeding is not what is measured.
pub async fn seed(pool: &PgPool, stages: Vec<Vec<Seed>>) -> anyhow::Result<usize> {
    let mut n = 0;
    for stage in stages {
        for chunk in stage.chunks(5_000) {
            let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::now_v7()).collect();
            let streams: Vec<&str> = chunk.iter().map(|s| s.stream.as_str()).collect();
            let versions: Vec<i64> = chunk.iter().map(|s| s.version).collect();
            let kinds: Vec<&str> = chunk.iter().map(|s| s.kind).collect();
            let payloads: Vec<String> = chunk.iter().map(|s| s.payload.to_string()).collect();
            for stream in &streams {
                StreamId::new(*stream).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            sqlx::query(
                "INSERT INTO events (transaction_id, event_id, stream_id, stream_version,
                                     event_type, schema_version, payload, metadata)
                 SELECT (SELECT pg_current_xact_id()::text::bigint), u.id, u.s, u.v, u.t, 1,
                        u.p::jsonb, '{}'::jsonb
                 FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::text[])
                      WITH ORDINALITY AS u (id, s, v, t, p, ord)
                 ORDER BY u.ord",
            )
            .bind(&ids)
            .bind(&streams)
            .bind(&versions)
            .bind(&kinds)
            .bind(&payloads)
            .execute(pool)
            .await?;
            n += chunk.len();
        }
    }
    Ok(n)
}
