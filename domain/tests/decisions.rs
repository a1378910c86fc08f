//! Given/when/then tests of every command's decisions, refusals included.
//! Pure: events in, events or a refusal out.

use chorus_domain::DomainEvent;
use chorus_domain::interactions::{self, InteractionError, InteractionState, Target};
use chorus_domain::posts::{
    self, Author, CreatePost, EditPost, Mention, PostError, PostFacts, PostState, ReplyTarget,
    Standing, Visibility,
};
use chorus_domain::relationships::{self, Followee, RelationshipError, RelationshipState};
use chorus_domain::remote::{RemoteParent, RemotePostCreated, RemotePostState};
use chrono::{TimeZone, Utc};
use uuid::Uuid;

const BASE: &str = "https://chorus.test";
const ALICE: &str = "https://chorus.test/users/alice";
const BOB: &str = "https://chorus.test/users/bob";
const CAROL: &str = "https://chorus.test/users/carol";

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

fn relationship(given: &[DomainEvent]) -> RelationshipState {
    let mut state = RelationshipState::default();
    given.iter().for_each(|e| state.apply(e));
    state
}

fn types(events: &[DomainEvent]) -> Vec<&'static str> {
    events.iter().map(DomainEvent::event_type).collect()
}

fn followee(uri: &str, locked: bool) -> Followee {
    Followee {
        uri: uri.into(),
        locked,
        local: true,
    }
}

fn ok<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("refused: {e:?}"))
}

// ---- follows and blocks ------------------------------------------------------

#[test]
fn following_an_unlocked_local_actor_is_accepted_at_once() {
    let events = ok(relationships::follow(
        &relationship(&[]),
        ALICE,
        &followee(BOB, false),
        "f1",
        "a1",
    ));
    assert_eq!(types(&events), ["FollowRequested", "FollowAccepted"]);
    let DomainEvent::FollowAccepted(accept) = &events[1] else {
        panic!()
    };
    assert!(accept.automatic);
    assert_eq!(accept.activity["type"], "Accept");
    assert_eq!(accept.activity["actor"], BOB);
    assert_eq!(accept.activity["object"]["id"], "f1");
    let DomainEvent::FollowRequested(request) = &events[0] else {
        panic!()
    };
    assert_eq!(request.activity["type"], "Follow");
    assert_eq!(request.activity["object"], BOB);
    assert!(relationship(&events).follows(ALICE, BOB));
}

#[test]
fn following_a_locked_actor_waits_for_approval_then_approve_or_reject() {
    let requested = ok(relationships::follow(
        &relationship(&[]),
        ALICE,
        &followee(BOB, true),
        "f1",
        "a1",
    ));
    assert_eq!(types(&requested), ["FollowRequested"]);
    let state = relationship(&requested);
    assert!(!state.follows(ALICE, BOB));
    assert_eq!(
        relationships::follow(&state, ALICE, &followee(BOB, true), "f2", "a2"),
        Err(RelationshipError::AlreadyRequested)
    );

    let approved = ok(relationships::approve(&state, BOB, ALICE, "a1"));
    assert_eq!(types(&approved), ["FollowAccepted"]);
    let DomainEvent::FollowAccepted(accept) = &approved[0] else {
        panic!()
    };
    assert!(!accept.automatic);
    assert!(relationship(&[requested.clone(), approved].concat()).follows(ALICE, BOB));

    let rejected = ok(relationships::reject(&state, BOB, ALICE, "r1"));
    assert_eq!(types(&rejected), ["FollowRejected"]);
    assert_eq!(rejected_activity_type(&rejected), "Reject");
    let after = relationship(&[requested, rejected].concat());
    assert!(after.follow(ALICE, BOB).is_none());
    assert_eq!(
        relationships::approve(&after, BOB, ALICE, "a2"),
        Err(RelationshipError::NoFollowRequest)
    );
}

fn rejected_activity_type(events: &[DomainEvent]) -> String {
    match &events[0] {
        DomainEvent::FollowRejected(e) => {
            e.activity["type"].as_str().unwrap_or_default().to_owned()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn follow_refusals() {
    let following = ok(relationships::follow(
        &relationship(&[]),
        ALICE,
        &followee(BOB, false),
        "f1",
        "a1",
    ));
    let cases: Vec<(Vec<DomainEvent>, &str, Followee, RelationshipError)> = vec![
        (
            vec![],
            ALICE,
            followee(ALICE, false),
            RelationshipError::SelfFollow,
        ),
        (
            following.clone(),
            ALICE,
            followee(BOB, false),
            RelationshipError::AlreadyFollowing,
        ),
        (
            ok(relationships::block(&relationship(&[]), BOB, ALICE, "b1")),
            ALICE,
            followee(BOB, false),
            RelationshipError::Blocked,
        ),
        (
            ok(relationships::block(&relationship(&[]), ALICE, BOB, "b1")),
            ALICE,
            followee(BOB, false),
            RelationshipError::Blocked,
        ),
    ];
    for (given, follower, target, refusal) in cases {
        assert_eq!(
            relationships::follow(&relationship(&given), follower, &target, "f9", "a9"),
            Err(refusal)
        );
    }
}

#[test]
fn unfollow_undoes_the_follow_and_needs_one() {
    let given = ok(relationships::follow(
        &relationship(&[]),
        ALICE,
        &followee(BOB, false),
        "f1",
        "a1",
    ));
    let events = ok(relationships::unfollow(
        &relationship(&given),
        ALICE,
        BOB,
        "u1",
    ));
    let DomainEvent::Unfollowed(undo) = &events[0] else {
        panic!()
    };
    assert_eq!(undo.activity["type"], "Undo");
    assert_eq!(undo.activity["object"]["type"], "Follow");
    assert_eq!(undo.activity["object"]["id"], "f1");
    assert!(undo.activity["object"].get("@context").is_none());
    assert_eq!(
        relationships::unfollow(&relationship(&[given, events].concat()), ALICE, BOB, "u2"),
        Err(RelationshipError::NotFollowing)
    );
}

#[test]
fn blocking_severs_follows_both_ways_and_unblock_needs_a_block() {
    let given = [
        ok(relationships::follow(
            &relationship(&[]),
            ALICE,
            &followee(BOB, false),
            "f1",
            "a1",
        )),
        ok(relationships::follow(
            &relationship(&[]),
            BOB,
            &followee(ALICE, false),
            "f2",
            "a2",
        )),
    ]
    .concat();
    let events = ok(relationships::block(
        &relationship(&given),
        ALICE,
        BOB,
        "b1",
    ));
    assert_eq!(
        types(&events),
        ["Blocked", "FollowSevered", "FollowSevered"]
    );
    let state = relationship(&[given, events.clone()].concat());
    assert!(!state.follows(ALICE, BOB) && !state.follows(BOB, ALICE));
    assert!(state.blocks(ALICE, BOB) && !state.blocks(BOB, ALICE));
    assert_eq!(
        relationships::block(&state, ALICE, BOB, "b2"),
        Err(RelationshipError::AlreadyBlocked)
    );
    assert_eq!(
        relationships::block(&state, ALICE, ALICE, "b2"),
        Err(RelationshipError::SelfBlock)
    );
    assert_eq!(
        relationships::unblock(&state, BOB, ALICE, "u1"),
        Err(RelationshipError::NotBlocked)
    );
    let unblocked = ok(relationships::unblock(&state, ALICE, BOB, "u1"));
    let DomainEvent::Unblocked(undo) = &unblocked[0] else {
        panic!()
    };
    assert_eq!(undo.activity["object"]["type"], "Block");
    assert!(!relationship(&[events, unblocked].concat()).blocked_either_way(ALICE, BOB));
}

#[test]
fn both_directions_share_one_stream() {
    assert_eq!(
        relationships::relationship_stream(ALICE, BOB),
        relationships::relationship_stream(BOB, ALICE)
    );
    assert_ne!(
        relationships::relationship_stream(ALICE, BOB),
        relationships::relationship_stream(ALICE, CAROL)
    );
}

// ---- posts ---------------------------------------------------------------------

fn author(uri: &str) -> Author {
    Author {
        uri: uri.into(),
        followers: format!("{uri}/followers"),
    }
}

fn post_command(text: &str, visibility: Visibility, mentions: Vec<Mention>) -> CreatePost {
    CreatePost {
        post_id: Uuid::from_u128(1),
        text: text.into(),
        summary: None,
        sensitive: false,
        visibility,
        mentions,
        audience: None,
    }
}

fn bob_mention() -> Vec<Mention> {
    vec![Mention {
        acct: "bob".into(),
        uri: BOB.into(),
        url: None,
    }]
}

fn created(events: &[DomainEvent]) -> posts::PostCreated {
    match &events[0] {
        DomainEvent::PostCreated(p) => p.clone(),
        other => panic!("{other:?}"),
    }
}

fn post_state(given: &[DomainEvent]) -> PostState {
    let mut state = PostState::default();
    given.iter().for_each(|e| state.apply(e));
    state
}

#[test]
fn visibility_maps_to_addressing_like_mastodon() {
    let public = "https://www.w3.org/ns/activitystreams#Public";
    let followers = format!("{ALICE}/followers");
    let check = |v: Visibility, to: Vec<&str>, cc: Vec<&str>| {
        let p = created(&ok(posts::create(
            &author(ALICE),
            post_command("hi @bob", v, bob_mention()),
            None,
            BASE,
            now(),
        )));
        assert_eq!(p.to, to, "{v:?} to");
        assert_eq!(p.cc, cc, "{v:?} cc");
        assert_eq!(p.activity["to"], serde_json::json!(to));
        assert_eq!(p.activity["object"]["cc"], serde_json::json!(cc));
    };
    check(Visibility::Public, vec![public], vec![&followers, BOB]);
    check(Visibility::Unlisted, vec![&followers], vec![public, BOB]);
    check(Visibility::FollowersOnly, vec![&followers], vec![BOB]);
    check(Visibility::Direct, vec![BOB], vec![]);
}

#[test]
fn a_post_is_published_and_edited_to_the_millisecond() {
    // A reply often comes within the second of the post it answers; a peer
    // ordering the conversation by `published` needs more than seconds.
    let at = now() + chrono::Duration::microseconds(250_400);
    let given = ok(posts::create(
        &author(ALICE),
        post_command("first", Visibility::Public, vec![]),
        None,
        BASE,
        at,
    ));
    let p = created(&given);
    assert_eq!(p.activity["published"], "2026-11-23T12:00:00.250Z");
    assert_eq!(
        p.activity["object"]["published"],
        "2026-11-23T12:00:00.250Z"
    );
    let edit = EditPost {
        text: "second".into(),
        summary: None,
        sensitive: false,
        mentions: vec![],
    };
    let later = at + chrono::Duration::milliseconds(1);
    let edited = ok(posts::edit(&post_state(&given), ALICE, edit, BASE, later));
    let DomainEvent::PostEdited(e) = &edited[0] else {
        panic!()
    };
    assert_eq!(
        e.activity["object"]["published"],
        "2026-11-23T12:00:00.250Z"
    );
    assert_eq!(e.activity["object"]["updated"], "2026-11-23T12:00:00.251Z");
}

#[test]
fn a_post_renders_safe_html_with_mentions_hashtags_and_links() {
    let text = "Hello @bob and @nobody! <script>alert(1)</script> #RustLang https://example.com/a?b=1.\n\nSecond & last";
    let p = created(&ok(posts::create(
        &author(ALICE),
        post_command(text, Visibility::Public, bob_mention()),
        None,
        BASE,
        now(),
    )));
    assert!(!p.content.contains("<script>"));
    assert!(p.content.contains("&lt;script&gt;"));
    assert!(p.content.contains(&format!(
        "<a href=\"{BOB}\" class=\"u-url mention\">@<span>bob</span></a>"
    )));
    assert!(
        p.content.contains("@nobody"),
        "unresolved mentions stay text"
    );
    assert!(
        p.content
            .contains("href=\"https://chorus.test/tags/rustlang\"")
    );
    assert!(p.content.contains("<a href=\"https://example.com/a?b=1\""));
    assert!(p.content.starts_with("<p>") && p.content.contains("</p><p>Second &amp; last</p>"));
    assert_eq!(p.hashtags, ["rustlang"]);
    assert_eq!(p.mentions, [BOB]);
    let tags = p.activity["object"]["tag"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        tags.iter()
            .any(|t| t["type"] == "Mention" && t["href"] == BOB)
    );
    assert!(
        tags.iter()
            .any(|t| t["type"] == "Hashtag" && t["name"] == "#rustlang")
    );
    assert_eq!(p.activity["type"], "Create");
    assert_eq!(p.activity["object"]["type"], "Note");
    assert_eq!(p.thread_root, p.uri);
    assert_eq!(
        posts::mentioned_accts("hi @Bob and @carol@remote.example, mail a@b.c"),
        ["bob", "carol@remote.example"]
    );
}

#[test]
fn a_content_warning_makes_the_post_sensitive() {
    let mut c = post_command("spoilers", Visibility::Public, vec![]);
    c.summary = Some(" ending ".into());
    let p = created(&ok(posts::create(&author(ALICE), c, None, BASE, now())));
    assert_eq!(p.summary.as_deref(), Some("ending"));
    assert!(p.sensitive);
    assert_eq!(p.activity["object"]["summary"], "ending");
}

#[test]
fn post_refusals() {
    let refused = |c: CreatePost| posts::create(&author(ALICE), c, None, BASE, now()).err();
    assert_eq!(
        refused(post_command("   ", Visibility::Public, vec![])),
        Some(PostError::Empty)
    );
    assert_eq!(
        refused(post_command(&"x".repeat(5001), Visibility::Public, vec![])),
        Some(PostError::TooLong)
    );
    assert_eq!(
        refused(post_command("nobody here", Visibility::Direct, vec![])),
        Some(PostError::DirectWithoutRecipients)
    );
    let mut c = post_command("x", Visibility::Public, vec![]);
    c.summary = Some("y".repeat(501));
    assert_eq!(refused(c), Some(PostError::SummaryTooLong));
}

#[test]
fn replies_thread_under_their_parent_and_respect_visibility_and_blocks() {
    let parent = ok(posts::create(
        &author(ALICE),
        post_command("root", Visibility::Public, vec![]),
        None,
        BASE,
        now(),
    ));
    let parent_state = post_state(&parent);
    let mut c = post_command("reply", Visibility::Public, vec![]);
    c.post_id = Uuid::from_u128(2);
    let reply = created(&ok(posts::create(
        &author(BOB),
        c.clone(),
        Some(ReplyTarget {
            parent: &parent_state,
            standing: Standing::default(),
        }),
        BASE,
        now(),
    )));
    assert_eq!(
        reply.in_reply_to.as_deref(),
        Some(created(&parent).uri.as_str())
    );
    assert_eq!(reply.in_reply_to_author.as_deref(), Some(ALICE));
    assert_eq!(reply.thread_root, created(&parent).uri);
    assert_eq!(reply.activity["object"]["inReplyTo"], created(&parent).uri);

    let blocked = Standing {
        blocked: true,
        follows_author: false,
    };
    let reply_to = |state: &PostState, standing| {
        posts::create(
            &author(BOB),
            c.clone(),
            Some(ReplyTarget {
                parent: state,
                standing,
            }),
            BASE,
            now(),
        )
        .err()
    };
    assert_eq!(reply_to(&parent_state, blocked), Some(PostError::Blocked));
    assert_eq!(
        reply_to(&PostState::default(), Standing::default()),
        Some(PostError::NotFound)
    );
    let deleted = post_state(
        &[
            parent.clone(),
            ok(posts::delete(&parent_state, ALICE, now())),
        ]
        .concat(),
    );
    assert_eq!(
        reply_to(&deleted, Standing::default()),
        Some(PostError::Deleted)
    );
    let private = post_state(&ok(posts::create(
        &author(ALICE),
        post_command("secret", Visibility::FollowersOnly, vec![]),
        None,
        BASE,
        now(),
    )));
    assert_eq!(
        reply_to(&private, Standing::default()),
        Some(PostError::NotFound)
    );
    assert!(
        reply_to(
            &private,
            Standing {
                follows_author: true,
                blocked: false
            }
        )
        .is_none()
    );
}

#[test]
fn only_the_author_edits_or_deletes_and_not_twice() {
    let given = ok(posts::create(
        &author(ALICE),
        post_command("first", Visibility::Public, vec![]),
        None,
        BASE,
        now(),
    ));
    let state = post_state(&given);
    let edit = EditPost {
        text: "second #tag".into(),
        summary: None,
        sensitive: false,
        mentions: vec![],
    };
    let edited = ok(posts::edit(&state, ALICE, edit.clone(), BASE, now()));
    let DomainEvent::PostEdited(e) = &edited[0] else {
        panic!()
    };
    assert_eq!(e.activity["type"], "Update");
    assert_eq!(e.activity["object"]["content"], e.content);
    assert!(e.activity["object"]["updated"].is_string());
    assert_eq!(e.hashtags, ["tag"]);
    assert_eq!(
        posts::edit(&state, BOB, edit.clone(), BASE, now()),
        Err(PostError::NotAuthor)
    );
    assert_eq!(posts::delete(&state, BOB, now()), Err(PostError::NotAuthor));
    assert_eq!(
        posts::edit(&PostState::default(), ALICE, edit.clone(), BASE, now()),
        Err(PostError::NotFound)
    );
    let deleted = ok(posts::delete(&state, ALICE, now()));
    let DomainEvent::PostDeleted(d) = &deleted[0] else {
        panic!()
    };
    assert_eq!(d.activity["type"], "Delete");
    assert_eq!(d.activity["object"]["type"], "Tombstone");
    let gone = post_state(&[given, deleted].concat());
    assert_eq!(posts::delete(&gone, ALICE, now()), Err(PostError::Deleted));
    assert_eq!(
        posts::edit(&gone, ALICE, edit, BASE, now()),
        Err(PostError::Deleted)
    );
}

// ---- favorites and reblogs -----------------------------------------------------------

fn interaction(given: &[DomainEvent]) -> InteractionState {
    let mut state = InteractionState::default();
    given.iter().for_each(|e| state.apply(e));
    state
}

#[test]
fn favorite_and_unfavorite() {
    let post = created(&ok(posts::create(
        &author(ALICE),
        post_command("nice", Visibility::Public, vec![]),
        None,
        BASE,
        now(),
    )));
    let target = Target {
        post: Some(&post),
        mentions: &[],
        standing: Standing::default(),
    };
    let liked = ok(interactions::favorite(
        &interaction(&[]),
        BOB,
        &target,
        "l1",
    ));
    let DomainEvent::Favorited(like) = &liked[0] else {
        panic!()
    };
    assert_eq!(like.activity["type"], "Like");
    assert_eq!(like.activity["object"], post.uri);
    assert_eq!(like.post_author, ALICE);
    let state = interaction(&liked);
    assert_eq!(
        interactions::favorite(&state, BOB, &target, "l2"),
        Err(InteractionError::AlreadyFavorited)
    );
    let undone = ok(interactions::unfavorite(
        &state, BOB, &post.uri, ALICE, "u1",
    ));
    let DomainEvent::Unfavorited(undo) = &undone[0] else {
        panic!()
    };
    assert_eq!(undo.activity["object"]["type"], "Like");
    assert_eq!(
        interactions::unfavorite(
            &interaction(&[liked, undone].concat()),
            BOB,
            &post.uri,
            ALICE,
            "u2"
        ),
        Err(InteractionError::NotFavorited)
    );
}

#[test]
fn interaction_refusals() {
    let public = created(&ok(posts::create(
        &author(ALICE),
        post_command("p", Visibility::Public, vec![]),
        None,
        BASE,
        now(),
    )));
    let private = created(&ok(posts::create(
        &author(ALICE),
        post_command("p", Visibility::FollowersOnly, vec![]),
        None,
        BASE,
        now(),
    )));
    let blocked = Standing {
        blocked: true,
        follows_author: false,
    };
    let fav = |post: Option<&posts::PostCreated>, standing| {
        interactions::favorite(
            &interaction(&[]),
            BOB,
            &Target {
                post,
                mentions: &[],
                standing,
            },
            "l",
        )
        .err()
    };
    assert_eq!(
        fav(None, Standing::default()),
        Some(InteractionError::NotFound)
    );
    assert_eq!(fav(Some(&public), blocked), Some(InteractionError::Blocked));
    assert_eq!(
        fav(Some(&private), Standing::default()),
        Some(InteractionError::NotFound)
    );
    assert_eq!(
        fav(
            Some(&private),
            Standing {
                follows_author: true,
                blocked: false
            }
        ),
        None
    );

    let reblog = |post: &posts::PostCreated, standing| {
        interactions::reblog(
            &interaction(&[]),
            BOB,
            &format!("{BOB}/followers"),
            &Target {
                post: Some(post),
                mentions: &[],
                standing,
            },
            "r",
            now(),
        )
        .err()
    };
    assert_eq!(
        reblog(
            &private,
            Standing {
                follows_author: true,
                blocked: false
            }
        ),
        Some(InteractionError::NotReblogable)
    );
    assert_eq!(reblog(&public, blocked), Some(InteractionError::Blocked));
    let done = ok(interactions::reblog(
        &interaction(&[]),
        BOB,
        &format!("{BOB}/followers"),
        &Target {
            post: Some(&public),
            mentions: &[],
            standing: Standing::default(),
        },
        "r1",
        now(),
    ));
    let DomainEvent::Reblogged(announce) = &done[0] else {
        panic!()
    };
    assert_eq!(announce.activity["type"], "Announce");
    assert_eq!(announce.activity["cc"][0], ALICE);
    assert_eq!(
        interactions::reblog(
            &interaction(&done),
            BOB,
            "f",
            &Target {
                post: Some(&public),
                mentions: &[],
                standing: Standing::default()
            },
            "r2",
            now()
        ),
        Err(InteractionError::AlreadyReblogged)
    );
    let undone = ok(interactions::unreblog(
        &interaction(&done),
        BOB,
        "f",
        &public.uri,
        ALICE,
        "u",
    ));
    assert_eq!(types(&undone), ["Unreblogged"]);
    assert_eq!(
        interactions::unreblog(&interaction(&[]), BOB, "f", &public.uri, ALICE, "u"),
        Err(InteractionError::NotReblogged)
    );
}

#[test]
fn every_event_round_trips_through_the_log_format() {
    let mut events = ok(relationships::follow(
        &relationship(&[]),
        ALICE,
        &followee(BOB, false),
        "f1",
        "a1",
    ));
    events.extend(ok(posts::create(
        &author(ALICE),
        post_command("x @bob", Visibility::Public, bob_mention()),
        None,
        BASE,
        now(),
    )));
    for event in events {
        let new = ok(event.to_new_event());
        let recorded = chorus_domain::RecordedEvent {
            id: new.id,
            stream_id: chorus_domain::StreamId::new("s").unwrap_or_else(|e| panic!("{e}")),
            stream_version: 1,
            event_type: new.event_type.clone(),
            schema_version: new.schema_version,
            payload: chorus_domain::Payload::from_store(new.payload.get()),
            metadata: new.metadata.clone(),
            recorded_at: now(),
            position: chorus_domain::Position::START,
        };
        assert_eq!(ok(DomainEvent::from_recorded(&recorded)), Some(event));
    }
}

// ---- remote posts and actors -------------------------------------------------

const DAVE: &str = "https://remote.example/users/dave";

fn remote_post(visibility: Visibility, mentions: &[&str]) -> RemotePostCreated {
    RemotePostCreated {
        uri: "https://remote.example/notes/1".into(),
        kind: "Note".into(),
        author: DAVE.into(),
        content: "<p>hi</p>".into(),
        summary: None,
        sensitive: false,
        visibility,
        in_reply_to: None,
        mentions: mentions.iter().map(|m| (*m).to_owned()).collect(),
        hashtags: vec![],
        to: vec![],
        cc: vec![],
        url: None,
        attachments: vec![],
        published: now(),
    }
}

fn remote_state(given: &[DomainEvent]) -> RemotePostState {
    let mut state = RemotePostState::default();
    given.iter().for_each(|e| state.apply(e));
    state
}

fn dave_mention() -> Mention {
    Mention {
        acct: "dave@remote.example".into(),
        uri: DAVE.into(),
        url: Some("https://remote.example/@dave".into()),
    }
}

#[test]
fn a_remote_post_is_favorited_and_reblogged_like_a_local_one() {
    let post = remote_post(Visibility::Public, &[]);
    let target = Target {
        post: Some(&post),
        mentions: &[],
        standing: Standing::default(),
    };
    let liked = ok(interactions::favorite(
        &interaction(&[]),
        ALICE,
        &target,
        "l1",
    ));
    let DomainEvent::Favorited(like) = &liked[0] else {
        panic!()
    };
    assert_eq!(like.post, post.uri);
    assert_eq!(like.post_author, DAVE);
    assert_eq!(like.activity["object"], post.uri);
    assert_eq!(like.activity["to"], serde_json::json!([DAVE]));
    let reblogged = ok(interactions::reblog(
        &interaction(&[]),
        ALICE,
        &format!("{ALICE}/followers"),
        &target,
        "r1",
        now(),
    ));
    let DomainEvent::Reblogged(announce) = &reblogged[0] else {
        panic!()
    };
    assert_eq!(announce.activity["cc"][0], DAVE);
    assert_eq!(announce.post_author, DAVE);
}

#[test]
fn a_remote_post_refuses_what_a_local_one_refuses() {
    let check = |post: Option<&RemotePostCreated>, standing: Standing, expected| {
        let target: Target<'_, dyn PostFacts> = Target {
            post: post.map(|p| p as &dyn PostFacts),
            mentions: post.map_or(&[][..], |p| &p.mentions),
            standing,
        };
        assert_eq!(
            interactions::favorite(&interaction(&[]), ALICE, &target, "l").err(),
            expected,
            "{post:?} {standing:?}"
        );
    };
    let followers_only = remote_post(Visibility::FollowersOnly, &[]);
    let direct_to_alice = remote_post(Visibility::Direct, &[ALICE]);
    let follows = Standing {
        follows_author: true,
        blocked: false,
    };
    let blocked = Standing {
        follows_author: false,
        blocked: true,
    };
    check(None, Standing::default(), Some(InteractionError::NotFound));
    check(
        Some(&followers_only),
        Standing::default(),
        Some(InteractionError::NotFound),
    );
    check(Some(&followers_only), follows, None);
    check(Some(&direct_to_alice), Standing::default(), None);
    check(
        Some(&remote_post(Visibility::Public, &[])),
        blocked,
        Some(InteractionError::Blocked),
    );
    // A deleted remote post is no post.
    let created = DomainEvent::RemotePostCreated(remote_post(Visibility::Public, &[]));
    let deleted = ok(chorus_domain::remote::delete_post(
        &remote_state(std::slice::from_ref(&created)),
        DAVE,
        now(),
    ));
    let state = remote_state(&[vec![created], deleted].concat());
    check(
        state.live(),
        Standing::default(),
        Some(InteractionError::NotFound),
    );
    assert_eq!(
        interactions::reblog(
            &interaction(&[]),
            ALICE,
            "f",
            &Target {
                post: Some(&followers_only),
                mentions: &[],
                standing: follows,
            },
            "r",
            now(),
        )
        .err(),
        Some(InteractionError::NotReblogable)
    );
}

#[test]
fn a_reply_to_a_remote_post_threads_under_it_and_addresses_its_author() {
    let parent = RemoteParent {
        state: remote_state(&[DomainEvent::RemotePostCreated(remote_post(
            Visibility::Public,
            &[],
        ))]),
        thread_root: "https://remote.example/notes/0".into(),
    };
    let reply = created(&ok(posts::create(
        &author(ALICE),
        post_command("agreed", Visibility::Public, vec![dave_mention()]),
        Some(ReplyTarget {
            parent: &parent,
            standing: Standing::default(),
        }),
        BASE,
        now(),
    )));
    assert_eq!(
        reply.in_reply_to.as_deref(),
        Some("https://remote.example/notes/1")
    );
    assert_eq!(reply.in_reply_to_author.as_deref(), Some(DAVE));
    assert_eq!(reply.thread_root, "https://remote.example/notes/0");
    assert_eq!(reply.mentions, [DAVE]);
    assert!(reply.cc.contains(&DAVE.to_owned()), "{:?}", reply.cc);
    assert_eq!(
        reply.activity["object"]["tag"],
        serde_json::json!([{ "type": "Mention", "href": DAVE, "name": "@dave@remote.example" }])
    );
    // The text itself is left as written.
    assert_eq!(reply.content, "<p>agreed</p>");

    // A direct reply goes to the replied-to author alone.
    let direct = created(&ok(posts::create(
        &author(ALICE),
        post_command("just you", Visibility::Direct, vec![]),
        Some(ReplyTarget {
            parent: &parent,
            standing: Standing::default(),
        }),
        BASE,
        now(),
    )));
    assert_eq!(direct.to, [DAVE]);
    assert_eq!(
        direct.activity["object"]["tag"],
        serde_json::json!([{ "type": "Mention", "href": DAVE }])
    );
}

#[test]
fn a_reply_to_a_remote_post_refuses_what_a_local_reply_refuses() {
    let reply_to = |parent: &RemoteParent, standing: Standing| {
        posts::create(
            &author(ALICE),
            post_command("re", Visibility::Public, vec![]),
            Some(ReplyTarget { parent, standing }),
            BASE,
            now(),
        )
        .err()
    };
    let created = DomainEvent::RemotePostCreated(remote_post(Visibility::FollowersOnly, &[]));
    let parent = |given: &[DomainEvent]| RemoteParent {
        state: remote_state(given),
        thread_root: "https://remote.example/notes/1".into(),
    };
    assert_eq!(
        reply_to(&parent(&[]), Standing::default()),
        Some(PostError::NotFound)
    );
    assert_eq!(
        reply_to(&parent(std::slice::from_ref(&created)), Standing::default()),
        Some(PostError::NotFound),
        "followers-only, and alice does not follow dave"
    );
    let follows = Standing {
        follows_author: true,
        blocked: false,
    };
    assert_eq!(
        reply_to(&parent(std::slice::from_ref(&created)), follows),
        None
    );
    let deleted = ok(chorus_domain::remote::delete_post(
        &remote_state(std::slice::from_ref(&created)),
        DAVE,
        now(),
    ));
    assert_eq!(
        reply_to(&parent(&[vec![created], deleted].concat()), follows),
        Some(PostError::Deleted)
    );
}

#[test]
fn a_reply_keeps_mentioning_the_replied_to_author_when_edited() {
    let parent = ok(posts::create(
        &author(BOB),
        post_command("root", Visibility::Public, vec![]),
        None,
        BASE,
        now(),
    ));
    let parent_state = post_state(&parent);
    let mut c = post_command("private answer", Visibility::Direct, vec![]);
    c.post_id = Uuid::from_u128(2);
    let reply = ok(posts::create(
        &author(ALICE),
        c,
        Some(ReplyTarget {
            parent: &parent_state,
            standing: Standing::default(),
        }),
        BASE,
        now(),
    ));
    assert_eq!(created(&reply).mentions, [BOB]);
    assert_eq!(created(&reply).to, [BOB]);
    let edited = ok(posts::edit(
        &post_state(&reply),
        ALICE,
        EditPost {
            text: "edited, still private".into(),
            summary: None,
            sensitive: false,
            mentions: vec![],
        },
        BASE,
        now(),
    ));
    let DomainEvent::PostEdited(e) = &edited[0] else {
        panic!()
    };
    assert_eq!(e.mentions, [BOB], "bob may still see the reply");
    // Replying to oneself mentions no one.
    let mut own = post_command("and another thing", Visibility::Public, vec![]);
    own.post_id = Uuid::from_u128(3);
    let own = created(&ok(posts::create(
        &author(BOB),
        own,
        Some(ReplyTarget {
            parent: &parent_state,
            standing: Standing::default(),
        }),
        BASE,
        now(),
    )));
    assert!(own.mentions.is_empty());
}

#[test]
fn a_remote_mention_links_to_the_profile_page_and_is_tagged_with_its_acct() {
    let p = created(&ok(posts::create(
        &author(ALICE),
        post_command(
            "hi @dave@remote.example",
            Visibility::Public,
            vec![dave_mention()],
        ),
        None,
        BASE,
        now(),
    )));
    assert!(
        p.content.contains(
            "<a href=\"https://remote.example/@dave\" class=\"u-url mention\">@<span>dave</span></a>"
        ),
        "{}",
        p.content
    );
    assert_eq!(p.mentions, [DAVE]);
    assert_eq!(p.cc, [format!("{ALICE}/followers"), DAVE.to_owned()]);
    assert_eq!(
        p.activity["object"]["tag"],
        serde_json::json!([{ "type": "Mention", "href": DAVE, "name": "@dave@remote.example" }])
    );
    // A profile page that is not a web address is not linked.
    let mut odd = dave_mention();
    odd.url = Some("javascript:alert(1)".into());
    let p = created(&ok(posts::create(
        &author(ALICE),
        post_command("hi @dave@remote.example", Visibility::Public, vec![odd]),
        None,
        BASE,
        now(),
    )));
    assert!(
        p.content.contains(&format!("<a href=\"{DAVE}\"")),
        "{}",
        p.content
    );
}
