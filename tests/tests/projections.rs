//! The read-model projections, fed by the real runner from real appends of
//! events decided by the domain: what each table holds after a realistic
//! scenario, that applying an event twice changes nothing, and that a
//! rebuild from the log yields exactly the same rows.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;

use chorus_domain::actors::{self, ActorState, Handle, RegisterActor, actor_stream};
use chorus_domain::interactions::{self, InteractionState, Target, favorite_stream, reblog_stream};
use chorus_domain::posts::{
    self, Author, CreatePost, EditPost, Mention, PostState, ReplyTarget, Standing, Visibility,
    mentioned_accts, post_stream, post_uri,
};
use chorus_domain::relationships::{self, Followee, RelationshipState, relationship_stream};
use chorus_domain::{
    DomainEvent, EventId, EventStore, ExpectedVersion, Metadata, Payload, Position, RecordedEvent,
    StreamId,
};
use chorus_postgres::PgEventStore;
use chorus_projections::{ProjectionError, Projections, all};
use chorus_tests::pg::test_db;
use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

const BASE: &str = "https://chorus.test";
const WAIT: Duration = Duration::from_secs(30);
/// Local accounts whose follow requests wait for approval.
const LOCKED: &[&str] = &["bob"];
/// Actors of another server; they never register here.
const REMOTE: &[&str] = &["dave", "zed"];

trait OrPanic<T> {
    fn or_panic(self) -> T;
}

impl<T, E: Display> OrPanic<T> for Result<T, E> {
    fn or_panic(self) -> T {
        self.unwrap_or_else(|e| panic!("{e}"))
    }
}

impl<T> OrPanic<T> for Option<T> {
    fn or_panic(self) -> T {
        self.unwrap_or_else(|| panic!("missing value"))
    }
}

/// The ActivityPub id of the actor called `name` in these tests.
fn actor(name: &str) -> String {
    if REMOTE.contains(&name) {
        format!("https://remote.example/users/{name}")
    } else {
        format!("{BASE}/users/{name}")
    }
}

/// The server as the scenario drives it: each action is decided by the
/// domain against the state folded from the events appended so far, then
/// appended to the real store.
struct World {
    pool: PgPool,
    store: PgEventStore,
    /// The position of the last append.
    last: Position,
    posts: HashMap<&'static str, PostState>,
    relationships: HashMap<StreamId, RelationshipState>,
    interactions: HashMap<StreamId, InteractionState>,
    /// Short names of actors and posts by URI, for readable assertions.
    labels: HashMap<String, String>,
    ids: u32,
}

impl World {
    async fn new() -> Self {
        let db = test_db().await;
        let mut labels = HashMap::new();
        for name in ["alice", "bob", "carol", "dan", "erin", "dave", "zed"] {
            labels.insert(actor(name), name.to_owned());
        }
        Self {
            store: PgEventStore::new(db.pool.clone()),
            pool: db.pool,
            last: Position::START,
            posts: HashMap::new(),
            relationships: HashMap::new(),
            interactions: HashMap::new(),
            labels,
            ids: 0,
        }
    }

    fn label(&self, uri: &str) -> String {
        self.labels
            .get(uri)
            .cloned()
            .unwrap_or_else(|| uri.to_owned())
    }

    /// A fresh activity id of `actor`.
    fn id(&mut self, actor: &str, kind: &str) -> String {
        self.ids += 1;
        format!("{actor}#{kind}/{}", self.ids)
    }

    async fn append(&mut self, stream: &StreamId, events: &[DomainEvent]) {
        let events = events.iter().map(|e| e.to_new_event().or_panic()).collect();
        let outcome = self
            .store
            .append(stream, ExpectedVersion::Any, events)
            .await
            .or_panic();
        self.last = outcome.last_position().or_panic();
    }

    async fn register(&mut self, name: &str) {
        let handle = Handle::parse(name).or_panic();
        let command = RegisterActor {
            actor_id: Uuid::new_v4(),
            handle: handle.clone(),
            display_name: Some(name.to_uppercase()),
            locked: LOCKED.contains(&name),
            admin: name == "alice",
            public_key_pem: format!("PEM of {name}"),
        };
        let events = actors::register(&ActorState::default(), command, BASE, Utc::now()).or_panic();
        self.append(&actor_stream(&handle), &events).await;
    }

    fn standing(&self, actor: &str, author: &str) -> Standing {
        match self.relationships.get(&relationship_stream(actor, author)) {
            Some(state) => Standing {
                follows_author: state.follows(actor, author),
                blocked: state.blocked_either_way(actor, author),
            },
            None => Standing::default(),
        }
    }

    async fn relate(
        &mut self,
        a: &str,
        b: &str,
        decide: impl FnOnce(
            &RelationshipState,
        ) -> Result<Vec<DomainEvent>, relationships::RelationshipError>,
    ) {
        let stream = relationship_stream(a, b);
        let events = decide(self.relationships.entry(stream.clone()).or_default()).or_panic();
        self.append(&stream, &events).await;
        let state = self.relationships.entry(stream).or_default();
        for event in &events {
            state.apply(event);
        }
    }

    async fn follow(&mut self, follower: &str, followee: &str) {
        let (f, g) = (actor(follower), actor(followee));
        let target = Followee {
            uri: g.clone(),
            locked: LOCKED.contains(&followee),
            local: !REMOTE.contains(&followee),
        };
        let (follow_id, accept_id) = (self.id(&f, "follows"), self.id(&g, "accepts"));
        self.relate(&f, &g, |s| {
            relationships::follow(s, &f, &target, &follow_id, &accept_id)
        })
        .await;
    }

    async fn approve(&mut self, followee: &str, follower: &str) {
        let (g, f) = (actor(followee), actor(follower));
        let id = self.id(&g, "accepts");
        self.relate(&f, &g, |s| relationships::approve(s, &g, &f, &id))
            .await;
    }

    async fn reject(&mut self, followee: &str, follower: &str) {
        let (g, f) = (actor(followee), actor(follower));
        let id = self.id(&g, "rejects");
        self.relate(&f, &g, |s| relationships::reject(s, &g, &f, &id))
            .await;
    }

    async fn unfollow(&mut self, follower: &str, followee: &str) {
        let (f, g) = (actor(follower), actor(followee));
        let id = self.id(&f, "undos");
        self.relate(&f, &g, |s| relationships::unfollow(s, &f, &g, &id))
            .await;
    }

    async fn block(&mut self, blocker: &str, blocked: &str) {
        let (a, b) = (actor(blocker), actor(blocked));
        let id = self.id(&a, "blocks");
        self.relate(&a, &b, |s| relationships::block(s, &a, &b, &id))
            .await;
    }

    fn mentions(text: &str) -> Vec<Mention> {
        mentioned_accts(text)
            .into_iter()
            .map(|acct| {
                let uri = match acct.split_once('@') {
                    Some((name, host)) => format!("https://{host}/users/{name}"),
                    None => actor(&acct),
                };
                Mention {
                    acct,
                    uri,
                    url: None,
                }
            })
            .collect()
    }

    async fn post(
        &mut self,
        label: &'static str,
        author: &str,
        text: &str,
        visibility: Visibility,
        reply_to: Option<&str>,
    ) {
        let author = actor(author);
        let post_id = Uuid::new_v4();
        let command = CreatePost {
            post_id,
            text: text.to_owned(),
            summary: None,
            sensitive: false,
            visibility,
            mentions: Self::mentions(text),
        };
        let who = Author {
            uri: author.clone(),
            followers: format!("{author}/followers"),
        };
        let target = reply_to.map(|parent| {
            let parent = &self.posts[parent];
            let parent_author = &parent.created.as_ref().or_panic().author;
            ReplyTarget {
                parent,
                standing: self.standing(&author, parent_author),
            }
        });
        let events = posts::create(&who, command, target, BASE, Utc::now()).or_panic();
        self.append(&post_stream(post_id), &events).await;
        let mut state = PostState::default();
        for event in &events {
            state.apply(event);
        }
        self.labels
            .insert(post_uri(BASE, post_id), label.to_owned());
        self.posts.insert(label, state);
    }

    fn created(&self, label: &str) -> (Uuid, String, String) {
        let post = self.posts[label].created.as_ref().or_panic();
        (post.post_id, post.uri.clone(), post.author.clone())
    }

    fn uri(&self, label: &str) -> String {
        self.created(label).1
    }

    async fn edit(&mut self, label: &'static str, text: &str, summary: Option<&str>) {
        let (post_id, _, author) = self.created(label);
        let command = EditPost {
            text: text.to_owned(),
            summary: summary.map(str::to_owned),
            sensitive: false,
            mentions: Self::mentions(text),
        };
        let events = posts::edit(&self.posts[label], &author, command, BASE, Utc::now()).or_panic();
        self.append(&post_stream(post_id), &events).await;
        let state = self.posts.get_mut(label).or_panic();
        for event in &events {
            state.apply(event);
        }
    }

    async fn delete(&mut self, label: &'static str) {
        let (post_id, _, author) = self.created(label);
        let events = posts::delete(&self.posts[label], &author, Utc::now()).or_panic();
        self.append(&post_stream(post_id), &events).await;
        let state = self.posts.get_mut(label).or_panic();
        for event in &events {
            state.apply(event);
        }
    }

    async fn interact(
        &mut self,
        stream: StreamId,
        decide: impl FnOnce(
            &InteractionState,
        ) -> Result<Vec<DomainEvent>, interactions::InteractionError>,
    ) {
        let events = decide(self.interactions.entry(stream.clone()).or_default()).or_panic();
        self.append(&stream, &events).await;
        let state = self.interactions.entry(stream).or_default();
        for event in &events {
            state.apply(event);
        }
    }

    fn target(&self, actor: &str, label: &str) -> Target<'_> {
        let state = &self.posts[label];
        let author = &state.created.as_ref().or_panic().author;
        Target {
            post: state.live(),
            mentions: state.mentions(),
            standing: self.standing(actor, author),
        }
    }

    async fn favorite(&mut self, who: &str, label: &str) {
        let a = actor(who);
        let id = self.id(&a, "likes");
        let post = self.uri(label);
        let events = {
            let state = self.interactions.get(&favorite_stream(&a, &post));
            let target = self.target(&a, label);
            interactions::favorite(&state.cloned().unwrap_or_default(), &a, &target, &id)
        };
        self.interact(favorite_stream(&a, &post), |_| events).await;
    }

    async fn unfavorite(&mut self, who: &str, label: &str) {
        let a = actor(who);
        let id = self.id(&a, "undos");
        let (_, post, author) = self.created(label);
        self.interact(favorite_stream(&a, &post), |s| {
            interactions::unfavorite(s, &a, &post, &author, &id)
        })
        .await;
    }

    async fn reblog(&mut self, who: &str, label: &str) {
        let a = actor(who);
        let id = self.id(&a, "announces");
        let post = self.uri(label);
        let followers = format!("{a}/followers");
        let events = {
            let state = self.interactions.get(&reblog_stream(&a, &post));
            let target = self.target(&a, label);
            interactions::reblog(
                &state.cloned().unwrap_or_default(),
                &a,
                &followers,
                &target,
                &id,
                Utc::now(),
            )
        };
        self.interact(reblog_stream(&a, &post), |_| events).await;
    }

    async fn unreblog(&mut self, who: &str, label: &str) {
        let a = actor(who);
        let id = self.id(&a, "undos");
        let (_, post, author) = self.created(label);
        let followers = format!("{a}/followers");
        self.interact(reblog_stream(&a, &post), |s| {
            interactions::unreblog(s, &a, &followers, &post, &author, &id)
        })
        .await;
    }

    /// Rows of `sql`, each a list of columns; URIs of known actors and posts
    /// are replaced by their short names.
    async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let rows: Vec<(Vec<Option<String>>,)> = sqlx::query_as(sql)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .map(|(columns,)| {
                columns
                    .into_iter()
                    .map(|c| c.map(|c| self.label(&c)).unwrap_or_default())
                    .collect()
            })
            .collect()
    }

    /// `owner`'s home timeline, newest first: (post, reblogged by, author).
    async fn home(&self, owner: &str) -> Vec<Vec<String>> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT post, reblogged_by, author FROM home_timeline WHERE owner = $1
             ORDER BY position_major DESC, position_minor DESC",
        )
        .bind(actor(owner))
        .fetch_all(&self.pool)
        .await
        .or_panic();
        rows.into_iter()
            .map(|(post, by, author)| vec![self.label(&post), self.label(&by), self.label(&author)])
            .collect()
    }
}

/// Turns `[["a", "b"], ...]` into the owned rows `World::rows` returns.
fn table(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|row| row.iter().map(|c| (*c).to_owned()).collect())
        .collect()
}

/// Registers five local actors, has them (and two remote ones) follow,
/// post, edit, delete, favorite, reblog and block, as the domain decides.
async fn scenario() -> World {
    let mut w = World::new().await;
    for name in ["alice", "bob", "carol", "dan", "erin"] {
        w.register(name).await;
    }

    // Unlocked alice accepts everyone at once; locked bob decides.
    for follower in ["bob", "carol", "dan", "erin", "dave"] {
        w.follow(follower, "alice").await;
    }
    w.follow("alice", "bob").await;
    w.approve("bob", "alice").await;
    w.follow("carol", "bob").await;
    w.reject("bob", "carol").await;
    w.follow("dan", "carol").await;
    w.follow("alice", "zed").await;
    w.unfollow("erin", "alice").await;

    w.post("p1", "alice", "Hello #World", Visibility::Public, None)
        .await;
    w.post("p2", "alice", "Quiet one", Visibility::Unlisted, None)
        .await;
    w.post(
        "p3",
        "alice",
        "For friends and @erin",
        Visibility::FollowersOnly,
        None,
    )
    .await;
    w.post("p4", "alice", "@bob a secret", Visibility::Direct, None)
        .await;
    w.post(
        "p5",
        "bob",
        "@alice welcome! cc @dave@remote.example",
        Visibility::Public,
        Some("p1"),
    )
    .await;
    w.edit("p1", "Hello #World, edited", Some("Edited")).await;
    w.post("p6", "carol", "Reblog me", Visibility::Public, None)
        .await;
    w.post("p7", "carol", "Soon gone #temp", Visibility::Public, None)
        .await;

    w.favorite("bob", "p1").await;
    w.favorite("carol", "p1").await;
    w.favorite("alice", "p1").await;
    w.favorite("alice", "p7").await;
    w.unfavorite("carol", "p1").await;

    w.reblog("carol", "p1").await;
    w.reblog("bob", "p1").await;
    w.unreblog("bob", "p1").await;

    // Severs dan's follow of carol.
    w.block("carol", "dan").await;

    w.reblog("alice", "p6").await;
    w.reblog("alice", "p7").await;
    w.post("p8", "carol", "@dan I see you", Visibility::Public, None)
        .await;
    w.delete("p7").await;
    w
}

async fn start(w: &World) -> Projections {
    let projections = Projections::start(w.store.clone()).await.or_panic();
    assert!(
        projections.wait_for(w.last, WAIT).await,
        "the projections did not catch up: {:?}",
        projections.positions()
    );
    projections
}

#[tokio::test]
async fn the_read_models_follow_a_realistic_scenario() {
    let w = scenario().await;
    let projections = start(&w).await;
    let positions = projections.positions();
    assert_eq!(
        positions.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        [
            "actors",
            "posts",
            "follows",
            "favorites",
            "reblogs",
            "blocks",
            "timelines",
            "notifications",
            "instances",
            "received",
            "activity_stats"
        ]
    );
    assert!(positions.iter().all(|(_, p)| *p >= w.last), "{positions:?}");
    assert!(
        !projections
            .wait_for(Position::new(u64::MAX, 0), Duration::from_millis(200))
            .await,
        "waiting for a position never written must time out"
    );

    // actors
    assert_eq!(
        w.rows(
            "SELECT array[uri, handle, domain, local::text, locked::text, admin::text,
                          display_name, inbox, outbox, followers_uri, following_uri,
                          shared_inbox, key_id, public_key_pem]
             FROM actors ORDER BY position_major, position_minor"
        )
        .await,
        ["alice", "bob", "carol", "dan", "erin"]
            .iter()
            .map(|name| {
                let uri = actor(name);
                vec![
                    (*name).to_owned(),
                    (*name).to_owned(),
                    "chorus.test".to_owned(),
                    "true".to_owned(),
                    (*name == "bob").to_string(),
                    (*name == "alice").to_string(),
                    name.to_uppercase(),
                    format!("{uri}/inbox"),
                    format!("{uri}/outbox"),
                    format!("{uri}/followers"),
                    format!("{uri}/following"),
                    format!("{BASE}/inbox"),
                    format!("{uri}#main-key"),
                    format!("PEM of {name}"),
                ]
            })
            .collect::<Vec<_>>()
    );

    // posts
    assert_eq!(
        w.rows(
            "SELECT array[uri, author, visibility, source, summary, sensitive::text,
                          array_to_string(hashtags, ' '), array_to_string(mentions, ' '),
                          in_reply_to, in_reply_to_author, thread_root,
                          (edited_at IS NOT NULL)::text, (deleted_at IS NOT NULL)::text,
                          local::text]
             FROM posts ORDER BY position_major, position_minor"
        )
        .await,
        table(&[
            &[
                "p1",
                "alice",
                "public",
                "Hello #World, edited",
                "Edited",
                "true",
                "world",
                "",
                "",
                "",
                "p1",
                "true",
                "false",
                "true"
            ],
            &[
                "p2",
                "alice",
                "unlisted",
                "Quiet one",
                "",
                "false",
                "",
                "",
                "",
                "",
                "p2",
                "false",
                "false",
                "true"
            ],
            &[
                "p3",
                "alice",
                "followers_only",
                "For friends and @erin",
                "",
                "false",
                "",
                "erin",
                "",
                "",
                "p3",
                "false",
                "false",
                "true"
            ],
            &[
                "p4",
                "alice",
                "direct",
                "@bob a secret",
                "",
                "false",
                "",
                "bob",
                "",
                "",
                "p4",
                "false",
                "false",
                "true"
            ],
            &[
                "p5",
                "bob",
                "public",
                "@alice welcome! cc @dave@remote.example",
                "",
                "false",
                "",
                &format!("{} {}", actor("alice"), actor("dave")),
                "p1",
                "alice",
                "p1",
                "false",
                "false",
                "true"
            ],
            &[
                "p6",
                "carol",
                "public",
                "Reblog me",
                "",
                "false",
                "",
                "",
                "",
                "",
                "p6",
                "false",
                "false",
                "true"
            ],
            // Deleted: nothing of its text remains.
            &[
                "p7", "carol", "public", "", "", "false", "", "", "", "", "p7", "false", "true",
                "true"
            ],
            &[
                "p8",
                "carol",
                "public",
                "@dan I see you",
                "",
                "false",
                "",
                "dan",
                "",
                "",
                "p8",
                "false",
                "false",
                "true"
            ],
        ])
    );
    let (p1_content, p1_note, p7_content, p7_activity): (
        String,
        String,
        String,
        Option<serde_json::Value>,
    ) = sqlx::query_as(
        "SELECT p1.content, p1.activity->'object'->>'content', p7.content, p7.activity
         FROM posts p1, posts p7 WHERE p1.uri = $1 AND p7.uri = $2",
    )
    .bind(w.uri("p1"))
    .bind(w.uri("p7"))
    .fetch_one(&w.pool)
    .await
    .or_panic();
    assert!(p1_content.contains("edited"), "{p1_content}");
    assert_eq!(
        p1_note, p1_content,
        "the stored Create must carry the edited Note"
    );
    assert_eq!((p7_content.as_str(), p7_activity), ("", None));
    assert_eq!(
        w.rows(
            "SELECT array[e.post_uri, e.version::text, e.source, e.summary, e.sensitive::text]
             FROM post_edits e JOIN posts p ON p.uri = e.post_uri
             ORDER BY p.position_major, p.position_minor, e.version"
        )
        .await,
        table(&[
            &["p1", "1", "Hello #World", "", "false"],
            &["p1", "2", "Hello #World, edited", "Edited", "true"],
            &["p2", "1", "Quiet one", "", "false"],
            &["p3", "1", "For friends and @erin", "", "false"],
            &["p4", "1", "@bob a secret", "", "false"],
            &[
                "p5",
                "1",
                "@alice welcome! cc @dave@remote.example",
                "",
                "false"
            ],
            &["p6", "1", "Reblog me", "", "false"],
            &["p8", "1", "@dan I see you", "", "false"],
        ])
    );

    // follows: a refused request stays as such; unfollowed and severed
    // follows are gone.
    assert_eq!(
        w.rows("SELECT array[follower, followee, state] FROM follows ORDER BY follower, followee")
            .await,
        table(&[
            &["alice", "bob", "accepted"],
            &["alice", "zed", "requested"],
            &["bob", "alice", "accepted"],
            &["carol", "alice", "accepted"],
            &["carol", "bob", "rejected"],
            &["dan", "alice", "accepted"],
            &["dave", "alice", "accepted"],
        ])
    );
    // An approved follow keeps the time and position of its request.
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM follows f
         JOIN events e ON e.event_type = 'FollowRequested' AND e.payload->>'follow_id' = f.follow_id
         WHERE (f.position_major, f.position_minor, f.created_at)
            <> (e.transaction_id, e.seq, e.recorded_at)",
    )
    .fetch_one(&w.pool)
    .await
    .or_panic();
    assert_eq!(mismatched, 0);

    // favorites, reblogs, blocks
    assert_eq!(
        w.rows("SELECT array[actor, post, post_author] FROM favorites ORDER BY actor, post")
            .await,
        table(&[&["alice", "p1", "alice"], &["bob", "p1", "alice"]])
    );
    assert_eq!(
        w.rows("SELECT array[actor, post, post_author] FROM reblogs ORDER BY actor, post")
            .await,
        table(&[&["alice", "p6", "carol"], &["carol", "p1", "alice"]])
    );
    assert_eq!(
        w.rows("SELECT array[blocker, blocked] FROM blocks").await,
        table(&[&["carol", "dan"]])
    );

    // The timelines' own view of follows (local followers only) and blocks.
    assert_eq!(
        w.rows(
            "SELECT array[followee, follower] FROM timeline_followers ORDER BY followee, follower"
        )
        .await,
        table(&[
            &["alice", "bob"],
            &["alice", "carol"],
            &["alice", "dan"],
            &["bob", "alice"],
        ])
    );
    assert_eq!(
        w.rows("SELECT array[blocker, blocked] FROM timeline_blocks")
            .await,
        table(&[&["carol", "dan"]])
    );

    // Her own posts, her followees' (bob), and what she reblogged; bob's
    // reblog of p1 was taken back and p7 was deleted.
    assert_eq!(
        w.home("alice").await,
        table(&[
            &["p6", "alice", "carol"],
            &["p5", "", "bob"],
            &["p4", "", "alice"],
            &["p3", "", "alice"],
            &["p2", "", "alice"],
            &["p1", "", "alice"],
        ])
    );
    // Bob gets the direct post that mentions him.
    assert_eq!(
        w.home("bob").await,
        table(&[
            &["p6", "alice", "carol"],
            &["p5", "", "bob"],
            &["p4", "", "alice"],
            &["p3", "", "alice"],
            &["p2", "", "alice"],
            &["p1", "", "alice"],
        ])
    );
    // Carol does not get the direct post, nor bob's reply (her request to
    // follow him was rejected).
    assert_eq!(
        w.home("carol").await,
        table(&[
            &["p8", "", "carol"],
            &["p6", "alice", "carol"],
            &["p1", "carol", "alice"],
            &["p6", "", "carol"],
            &["p3", "", "alice"],
            &["p2", "", "alice"],
            &["p1", "", "alice"],
        ])
    );
    // Carol's block took her posts and her reblog out of dan's timeline, and
    // keeps out alice's reblog of carol's post and carol's mention of him.
    assert_eq!(
        w.home("dan").await,
        table(&[
            &["p3", "", "alice"],
            &["p2", "", "alice"],
            &["p1", "", "alice"]
        ])
    );
    // Erin unfollowed alice before she posted; only the mention reaches her.
    assert_eq!(w.home("erin").await, table(&[&["p3", "", "alice"]]));
    assert!(
        w.home("dave").await.is_empty(),
        "remote actors have no home"
    );

    // Public and local timelines: public posts only, p7 deleted.
    let public = table(&[
        &["p8", "carol"],
        &["p6", "carol"],
        &["p5", "bob"],
        &["p1", "alice"],
    ]);
    assert_eq!(
        w.rows(
            "SELECT array[post, author] FROM public_timeline
             ORDER BY position_major DESC, position_minor DESC"
        )
        .await,
        public
    );
    assert_eq!(
        w.rows(
            "SELECT array[post, author] FROM public_timeline WHERE local
             ORDER BY position_major DESC, position_minor DESC"
        )
        .await,
        public
    );

    // Notifications, for local recipients only, oldest first.
    assert_eq!(
        w.rows(
            "SELECT array[recipient, kind, actor, post] FROM notifications
             ORDER BY recipient, position_major, position_minor"
        )
        .await,
        table(&[
            // Automatic accepts replace the request with the new follower;
            // erin's unfollow does not take hers back.
            &["alice", "followed", "bob", ""],
            &["alice", "followed", "carol", ""],
            &["alice", "followed", "dan", ""],
            &["alice", "followed", "erin", ""],
            &["alice", "followed", "dave", ""],
            &["alice", "mentioned", "bob", "p5"],
            // Her own favorite of p1 notifies no one.
            &["alice", "favorited", "bob", "p1"],
            &["alice", "favorited", "carol", "p1"],
            &["alice", "reblogged", "carol", "p1"],
            &["alice", "reblogged", "bob", "p1"],
            // Locked bob's requests stay, whatever he decided.
            &["bob", "follow_requested", "alice", ""],
            &["bob", "follow_requested", "carol", ""],
            &["bob", "mentioned", "alice", "p4"],
            &["carol", "followed", "dan", ""],
            &["carol", "favorited", "alice", "p7"],
            &["carol", "reblogged", "alice", "p6"],
            &["carol", "reblogged", "alice", "p7"],
            // The notifications projection does not know about blocks:
            // whether to hide notifications from a blocked actor is for
            // the read side to decide.
            &["dan", "mentioned", "carol", "p8"],
            &["erin", "mentioned", "alice", "p3"],
        ])
    );
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications n
         LEFT JOIN events e ON e.event_id = n.event_id
         WHERE e.event_id IS NULL
            OR (n.position_major, n.position_minor, n.created_at)
            <> (e.transaction_id, e.seq, e.recorded_at)",
    )
    .fetch_one(&w.pool)
    .await
    .or_panic();
    assert_eq!(
        mismatched, 0,
        "a notification carries its event's id, position and time"
    );
}

/// Every read model, with an order that makes its dump deterministic.
const TABLES: &[(&str, &str)] = &[
    ("actors", "uri"),
    ("post_edits", "post_uri, version"),
    ("posts", "uri"),
    ("follows", "follower, followee"),
    ("favorites", "actor, post"),
    ("reblogs", "actor, post"),
    ("blocks", "blocker, blocked"),
    ("timeline_local_actors", "uri"),
    ("timeline_followers", "followee, follower"),
    ("timeline_blocks", "blocker, blocked"),
    ("home_timeline", "owner, post, reblogged_by"),
    ("public_timeline", "post"),
    ("notification_local_actors", "uri"),
    ("notifications", "event_id, recipient"),
];

async fn dump(pool: &PgPool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (table, order) in TABLES {
        let rows: String = sqlx::query_scalar(&format!(
            "SELECT coalesce(json_agg(t ORDER BY {order}), '[]')::text FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .or_panic();
        out.push((*table, rows));
    }
    out
}

/// Empties every read model (in `TABLES` order, which deletes edits before
/// their posts) and, with `checkpoints`, forgets how far projections got.
async fn clear(pool: &PgPool, checkpoints: bool) {
    for (table, _) in TABLES {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(pool)
            .await
            .or_panic();
    }
    if checkpoints {
        sqlx::query("DELETE FROM subscriber_checkpoints")
            .execute(pool)
            .await
            .or_panic();
    }
}

fn assert_non_trivial(dump: &[(&str, String)]) {
    for (table, rows) in dump {
        assert_ne!(rows, "[]", "the scenario leaves rows in {table}");
    }
}

#[tokio::test]
async fn a_rebuild_from_the_log_yields_the_same_rows() {
    let w = scenario().await;
    let projections = start(&w).await;
    let before = dump(&w.pool).await;
    assert_non_trivial(&before);
    drop(projections);

    clear(&w.pool, true).await;
    assert!(dump(&w.pool).await.iter().all(|(_, rows)| rows == "[]"));
    let projections = start(&w).await;
    let after = dump(&w.pool).await;
    for ((table, before), (_, after)) in before.iter().zip(&after) {
        assert_eq!(before, after, "{table} differs after the rebuild");
    }
    drop(projections);
}

#[tokio::test]
async fn applying_every_event_twice_changes_nothing() {
    let w = scenario().await;
    let projections = start(&w).await;
    let once = dump(&w.pool).await;
    assert_non_trivial(&once);
    drop(projections);
    clear(&w.pool, false).await;

    let events = w.store.read_all(Position::START, 100_000).await.or_panic();
    assert_eq!(events.last().map(|e| e.position), Some(w.last));
    let projections = all();
    let mut tx = w.pool.begin().await.or_panic();
    for event in &events {
        for projection in &projections {
            if projection.handles(&event.event_type) {
                projection.apply(&mut tx, event).await.or_panic();
                projection.apply(&mut tx, event).await.or_panic();
            }
        }
    }
    tx.commit().await.or_panic();
    let twice = dump(&w.pool).await;
    for ((table, once), (_, twice)) in once.iter().zip(&twice) {
        assert_eq!(
            once, twice,
            "{table} differs when each event is applied twice"
        );
    }
}

fn recorded(event_type: &str, schema_version: u32, payload: &str) -> RecordedEvent {
    RecordedEvent {
        id: EventId::new(),
        stream_id: StreamId::new("post-x").or_panic(),
        stream_version: 1,
        event_type: event_type.to_owned(),
        schema_version,
        payload: Payload::from_store(payload),
        metadata: Metadata::default(),
        recorded_at: Utc::now(),
        position: Position::new(1, 1),
    }
}

#[tokio::test]
async fn unknown_events_are_ignored_and_unreadable_ones_are_errors() {
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.or_panic();
    for projection in all() {
        // `activity_stats` counts every event, whatever its type.
        assert_eq!(
            projection.handles("SomethingElse"),
            projection.name() == "activity_stats",
            "{}",
            projection.name()
        );
        // Even if handed one, a projection ignores a type it does not know.
        projection
            .apply(&mut conn, &recorded("SomethingElse", 1, "{}"))
            .await
            .or_panic();
    }
    let posts = all().into_iter().find(|p| p.name() == "posts").or_panic();
    for event in [
        recorded("PostCreated", 1, r#"{"uri": 1}"#),
        recorded("PostCreated", 2, "{}"),
    ] {
        let result = posts.apply(&mut conn, &event).await;
        assert!(
            matches!(&result, Err(ProjectionError::Decode { event_id, .. }) if *event_id == event.id),
            "{result:?}"
        );
    }
}

/// Remote posts (roots and replies, public to direct, with mentions) and
/// received activities, as a busy inbox produces them.
async fn remote_traffic(store: &PgEventStore) {
    let alice = actor("alice");
    let author = actor("dave");
    let follow_id = format!("{BASE}/activities/follow-dave");
    let follow = [
        DomainEvent::FollowRequested(relationships::FollowRequested {
            follower: alice.clone(),
            followee: author.clone(),
            follow_id: follow_id.clone(),
            activity: serde_json::json!({}),
        }),
        DomainEvent::FollowAccepted(relationships::FollowAccepted {
            follower: alice.clone(),
            followee: author.clone(),
            follow_id,
            automatic: false,
            activity: serde_json::json!({}),
        }),
    ];
    store
        .append(
            &relationship_stream(&alice, &author),
            ExpectedVersion::Any,
            follow.iter().map(|e| e.to_new_event().or_panic()).collect(),
        )
        .await
        .or_panic();
    let visibilities = [
        Visibility::Public,
        Visibility::Unlisted,
        Visibility::FollowersOnly,
        Visibility::Direct,
    ];
    let mut batch = Vec::new();
    for i in 0..120 {
        let uri = format!("https://remote.example/notes/{i}");
        let received = DomainEvent::ActivityReceived(chorus_domain::remote::ActivityReceived {
            activity_id: format!("{uri}/activity"),
            activity_type: "Create".into(),
            actor: author.clone(),
            object: Some(uri.clone()),
            inbox: format!("{BASE}/inbox"),
            raw: "{}".into(),
        });
        let post = DomainEvent::RemotePostCreated(chorus_domain::remote::RemotePostCreated {
            uri: uri.clone(),
            kind: "Note".into(),
            author: author.clone(),
            content: format!("<p>note {i}</p>"),
            summary: None,
            sensitive: i % 7 == 0,
            visibility: visibilities[i % 4],
            // Every fifth replies to the one before, which may be in the same batch.
            in_reply_to: (i % 5 == 4).then(|| format!("https://remote.example/notes/{}", i - 1)),
            mentions: if i % 3 == 0 {
                vec![alice.clone()]
            } else {
                vec![]
            },
            hashtags: vec!["tag".into()],
            to: vec![],
            cc: vec![],
            url: None,
            attachments: vec![],
            published: Utc::now(),
        });
        batch.push((
            chorus_domain::remote::received_stream(&format!("{uri}/activity")),
            received,
        ));
        batch.push((chorus_domain::remote::remote_post_stream(&uri), post));
    }
    for (stream, event) in batch {
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![event.to_new_event().or_panic()],
            )
            .await
            .or_panic();
    }
}

#[tokio::test]
async fn runs_written_in_one_statement_equal_events_applied_one_by_one() {
    let w = scenario().await;
    remote_traffic(&w.store).await;
    let extra = ["received_activities", "post_edits"];
    let dump_all = |pool: PgPool| async move {
        let mut out = dump(&pool).await;
        for table in extra {
            let rows: String = sqlx::query_scalar(&format!(
                "SELECT coalesce(json_agg(t ORDER BY t::text), '[]')::text FROM {table} t"
            ))
            .fetch_one(&pool)
            .await
            .or_panic();
            out.push((table, rows));
        }
        out
    };
    // The runner hands each projection whole batches (runs of remote posts
    // and received activities go through `apply_all`'s bulk statements).
    let projections = start(&w).await;
    let last = w
        .store
        .read_all(Position::START, 100_000)
        .await
        .or_panic()
        .last()
        .or_panic()
        .position;
    assert!(projections.wait_for(last, WAIT).await);
    let batched = dump_all(w.pool.clone()).await;
    drop(projections);
    assert!(
        batched
            .iter()
            .any(|(t, rows)| *t == "received_activities" && rows.len() > 1000)
    );

    clear(&w.pool, true).await;
    for table in extra {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&w.pool)
            .await
            .or_panic();
    }
    let events = w.store.read_all(Position::START, 100_000).await.or_panic();
    for projection in all() {
        let mut tx = w.pool.begin().await.or_panic();
        for event in &events {
            if projection.handles(&event.event_type) {
                projection.apply(&mut tx, event).await.or_panic();
            }
        }
        tx.commit().await.or_panic();
    }
    let one_by_one = dump_all(w.pool.clone()).await;
    for ((table, a), (_, b)) in batched.iter().zip(&one_by_one) {
        assert_eq!(
            a, b,
            "{table} differs between batched and one-by-one application"
        );
    }
}
