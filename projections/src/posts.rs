//! Projection `posts`: the current state of every post, and its edit history.

use async_trait::async_trait;
use chorus_domain::posts::{PostCreated, PostEdited};
use chorus_domain::remote::{RemotePostCreated, RemotePostDeleted, RemotePostEdited};
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, domain_of, micros, position, visibility};
use crate::runner::runs;
use crate::{Projection, ProjectionError};

/// The one field that decides how a remote post is written (the rest of
/// the payload is skipped while reading, not decoded twice).
#[derive(serde::Deserialize)]
struct InReplyTo {
    in_reply_to: Option<String>,
}

/// Keeps the `posts` and `post_edits` tables.
#[derive(Clone, Copy, Debug, Default)]
pub struct Posts;

const EVENTS: &[&str] = &[
    "PostCreated",
    "PostEdited",
    "PostDeleted",
    "RemotePostCreated",
    "RemotePostEdited",
    "RemotePostDeleted",
    "RemoteActorDeleted",
    "ActorDeleted",
];

#[async_trait]
impl Projection for Posts {
    fn name(&self) -> &'static str {
        "posts"
    }

    fn handles(&self, event_type: &str) -> bool {
        EVENTS.contains(&event_type)
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENTS)
    }

    fn tables(&self) -> &'static [&'static str] {
        &["posts", "post_edits"]
    }

    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        // Remote posts that reply to nothing arrive in bulk from a busy
        // inbox: one statement each run. (A reply takes its thread from its
        // parent, which may be earlier in the same run: one by one.)
        let root_post = |e: &RecordedEvent| {
            e.event_type == "RemotePostCreated"
                && e.payload
                    .decode::<InReplyTo>()
                    .is_ok_and(|p| p.in_reply_to.is_none())
        };
        for (together, run) in runs(events, root_post) {
            if together {
                remote_roots_created(conn, run).await?;
            } else {
                for event in run {
                    self.apply(conn, event).await?;
                }
            }
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match decode(event)? {
            Some(DomainEvent::PostCreated(e)) => created(conn, event, &e).await,
            Some(DomainEvent::PostEdited(e)) => edited(conn, &e).await,
            Some(DomainEvent::PostDeleted(e)) => deleted(conn, &e.uri, e.deleted_at).await,
            Some(DomainEvent::RemotePostCreated(e)) => remote_created(conn, event, &e).await,
            Some(DomainEvent::RemotePostEdited(e)) => remote_edited(conn, &e).await,
            Some(DomainEvent::RemotePostDeleted(e)) => remote_deleted(conn, &e).await,
            Some(DomainEvent::RemoteActorDeleted(e)) => {
                author_deleted(conn, &e.uri, false, e.deleted_at).await
            }
            Some(DomainEvent::ActorDeleted(e)) => {
                author_deleted(conn, &e.uri, true, e.deleted_at).await
            }
            _ => Ok(()),
        }
    }
}

async fn created(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    e: &PostCreated,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    // `PostCreated` is only ever appended for posts written here, hence
    // `local`. A post is created once, so an existing row is this creation
    // applied before (possibly edited or deleted since, which must stay).
    sqlx::query(
        "INSERT INTO posts (uri, post_id, author, local, content, source, summary, sensitive,
                            visibility, in_reply_to, in_reply_to_author, thread_root, mentions,
                            hashtags, to_recipients, cc_recipients, published, activity,
                            position_major, position_minor)
         VALUES ($1, $2, $3, true, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19)
         ON CONFLICT (uri) DO NOTHING",
    )
    .bind(&e.uri)
    .bind(e.post_id)
    .bind(&e.author)
    .bind(&e.content)
    .bind(&e.source)
    .bind(&e.summary)
    .bind(e.sensitive)
    .bind(visibility(e.visibility))
    .bind(&e.in_reply_to)
    .bind(&e.in_reply_to_author)
    .bind(&e.thread_root)
    .bind(&e.mentions)
    .bind(&e.hashtags)
    .bind(&e.to)
    .bind(&e.cc)
    .bind(e.published)
    .bind(&e.activity)
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    // The original is version 1 of the history. A deleted post has no
    // history any more, and applying its creation again must not bring the
    // deleted text back.
    sqlx::query(
        "INSERT INTO post_edits (post_uri, version, content, source, summary, sensitive, edited_at)
         SELECT uri, 1, $2, $3, $4, $5, $6 FROM posts WHERE uri = $1 AND deleted_at IS NULL
         ON CONFLICT (post_uri, version) DO NOTHING",
    )
    .bind(&e.uri)
    .bind(&e.content)
    .bind(&e.source)
    .bind(&e.summary)
    .bind(e.sensitive)
    .bind(e.published)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn edited(conn: &mut PgConnection, e: &PostEdited) -> Result<(), ProjectionError> {
    // The current state takes the edit, and the history gets the next
    // version, in one statement so that they cannot disagree. An edit is
    // recognised by its time: if the history already holds a version from
    // this edit, it was applied before and nothing changes. (Comparing with
    // the latest edit's time instead would drop an edit whose clock ran
    // behind the previous one's.)
    //
    // The stored Create keeps serving the outbox, so its Note is replaced
    // by the edited one: the text a user edited away must not linger there.
    sqlx::query(
        "WITH edited AS (
             UPDATE posts
             SET content = $2, source = $3, summary = $4, sensitive = $5, mentions = $6,
                 hashtags = $7, edited_at = $8,
                 activity = coalesce(jsonb_set(activity, '{object}', $9), activity)
             WHERE uri = $1
               AND deleted_at IS NULL
               AND NOT EXISTS (
                   SELECT 1 FROM post_edits
                   WHERE post_uri = $1 AND version > 1 AND edited_at = $8
               )
             RETURNING uri
         )
         INSERT INTO post_edits (post_uri, version, content, source, summary, sensitive, edited_at)
         SELECT uri,
                (SELECT coalesce(max(version), 0) + 1 FROM post_edits WHERE post_uri = edited.uri),
                $2, $3, $4, $5, $8
         FROM edited",
    )
    .bind(&e.uri)
    .bind(&e.content)
    .bind(&e.source)
    .bind(&e.summary)
    .bind(e.sensitive)
    .bind(&e.mentions)
    .bind(&e.hashtags)
    .bind(e.updated)
    .bind(e.activity.get("object"))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn deleted(
    conn: &mut PgConnection,
    uri: &str,
    deleted_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), ProjectionError> {
    // The row stays as a tombstone (the post answers as one, and replies
    // still point at it), but nothing the author wrote may stay behind in a
    // read model: the text, the content warning, what was derived from the
    // text (mentions, hashtags), the stored Create, and every earlier
    // version.
    sqlx::query(
        "UPDATE posts
         SET deleted_at = $2, content = '', source = NULL, summary = NULL, mentions = '{}',
             hashtags = '{}', activity = NULL
         WHERE uri = $1 AND deleted_at IS NULL",
    )
    .bind(uri)
    .bind(deleted_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM post_edits WHERE post_uri = $1")
        .bind(uri)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn remote_created(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    e: &RemotePostCreated,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    // A reply joins its parent's thread when the parent is known; otherwise
    // the parent (or the post itself) stands for the thread.
    sqlx::query(
        "INSERT INTO posts (uri, author, local, kind, domain, content, summary, sensitive,
                            visibility, in_reply_to, in_reply_to_author, thread_root, mentions,
                            hashtags, to_recipients, cc_recipients, published, url, attachments,
                            position_major, position_minor)
         SELECT $1, $2, false, $3, $4, $5, $6, $7, $8, $9, parent.author,
                coalesce(parent.thread_root, $9, $1), $10, $11, $12, $13, $14, $15, $16, $17, $18
         FROM (SELECT NULL) AS one
         LEFT JOIN posts AS parent ON parent.uri = $9
         ON CONFLICT (uri) DO NOTHING",
    )
    .bind(&e.uri)
    .bind(&e.author)
    .bind(&e.kind)
    .bind(domain_of(&e.author))
    .bind(&e.content)
    .bind(&e.summary)
    .bind(e.sensitive)
    .bind(visibility(e.visibility))
    .bind(&e.in_reply_to)
    .bind(&e.mentions)
    .bind(&e.hashtags)
    .bind(&e.to)
    .bind(&e.cc)
    .bind(e.published)
    .bind(&e.url)
    .bind(sqlx::types::Json(&e.attachments))
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO post_edits (post_uri, version, content, summary, sensitive, edited_at)
         SELECT uri, 1, $2, $3, $4, $5 FROM posts WHERE uri = $1 AND deleted_at IS NULL
         ON CONFLICT (post_uri, version) DO NOTHING",
    )
    .bind(&e.uri)
    .bind(&e.content)
    .bind(&e.summary)
    .bind(e.sensitive)
    .bind(e.published)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Remote posts that reply to nothing, in one statement.
async fn remote_roots_created(
    conn: &mut PgConnection,
    events: &[&RecordedEvent],
) -> Result<(), ProjectionError> {
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let Some(DomainEvent::RemotePostCreated(e)) = decode(event)? else {
            continue;
        };
        let (major, minor) = position(event);
        rows.push(serde_json::json!({
            "uri": e.uri,
            "author": e.author,
            "kind": e.kind,
            "domain": domain_of(&e.author),
            "content": e.content,
            "summary": e.summary,
            "sensitive": e.sensitive,
            "visibility": visibility(e.visibility),
            "mentions": e.mentions,
            "hashtags": e.hashtags,
            "to_recipients": e.to,
            "cc_recipients": e.cc,
            "published": micros(e.published),
            "url": e.url,
            "attachments": e.attachments,
            "position_major": major,
            "position_minor": minor,
        }));
    }
    sqlx::query(
        "WITH new AS (
             SELECT * FROM jsonb_to_recordset($1) AS r (uri text, author text, kind text,
                 domain text, content text, summary text, sensitive boolean, visibility text,
                 mentions text[], hashtags text[], to_recipients text[], cc_recipients text[],
                 published timestamptz, url text, attachments jsonb, position_major bigint,
                 position_minor bigint)
         ), inserted AS (
             INSERT INTO posts (uri, author, local, kind, domain, content, summary, sensitive,
                                visibility, thread_root, mentions, hashtags, to_recipients,
                                cc_recipients, published, url, attachments, position_major,
                                position_minor)
             SELECT uri, author, false, kind, domain, content, summary, sensitive, visibility,
                    uri, mentions, hashtags, to_recipients, cc_recipients, published, url,
                    attachments, position_major, position_minor
             FROM new
             ON CONFLICT (uri) DO NOTHING
             RETURNING uri, content, summary, sensitive, published
         )
         INSERT INTO post_edits (post_uri, version, content, summary, sensitive, edited_at)
         SELECT uri, 1, content, summary, sensitive, published FROM inserted
         ON CONFLICT (post_uri, version) DO NOTHING",
    )
    .bind(sqlx::types::Json(&rows))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn remote_edited(
    conn: &mut PgConnection,
    e: &RemotePostEdited,
) -> Result<(), ProjectionError> {
    // As for local edits: one statement, recognised by the edit's time.
    sqlx::query(
        "WITH edited AS (
             UPDATE posts
             SET content = $2, summary = $3, sensitive = $4, mentions = $5, hashtags = $6,
                 attachments = $7, edited_at = $8
             WHERE uri = $1
               AND NOT local
               AND deleted_at IS NULL
               AND NOT EXISTS (
                   SELECT 1 FROM post_edits
                   WHERE post_uri = $1 AND version > 1 AND edited_at = $8
               )
             RETURNING uri
         )
         INSERT INTO post_edits (post_uri, version, content, summary, sensitive, edited_at)
         SELECT uri,
                (SELECT coalesce(max(version), 0) + 1 FROM post_edits WHERE post_uri = edited.uri),
                $2, $3, $4, $8
         FROM edited",
    )
    .bind(&e.uri)
    .bind(&e.content)
    .bind(&e.summary)
    .bind(e.sensitive)
    .bind(&e.mentions)
    .bind(&e.hashtags)
    .bind(sqlx::types::Json(&e.attachments))
    .bind(e.updated)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn remote_deleted(
    conn: &mut PgConnection,
    e: &RemotePostDeleted,
) -> Result<(), ProjectionError> {
    deleted(conn, &e.uri, e.deleted_at).await?;
    sqlx::query("UPDATE posts SET attachments = '[]', url = NULL WHERE uri = $1 AND NOT local")
        .bind(&e.uri)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A deleted actor's posts go with it, as tombstones: a remote actor's
/// (`RemoteActorDeleted`) or a local account's (`ActorDeleted`, whose
/// Delete{Person} stands for the deletion of each of its posts).
async fn author_deleted(
    conn: &mut PgConnection,
    author: &str,
    local: bool,
    deleted_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "DELETE FROM post_edits
         WHERE post_uri IN (SELECT uri FROM posts WHERE author = $1 AND local = $2)",
    )
    .bind(author)
    .bind(local)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE posts
         SET deleted_at = $2, content = '', source = NULL, summary = NULL, mentions = '{}',
             hashtags = '{}', activity = NULL, attachments = '[]', url = NULL
         WHERE author = $1 AND local = $3 AND deleted_at IS NULL",
    )
    .bind(author)
    .bind(deleted_at)
    .bind(local)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
