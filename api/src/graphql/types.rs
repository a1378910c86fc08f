//! GraphQL object types, read from the read models.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{ComplexObject, Context, Enum, ID, SimpleObject};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::{MAX_PAGE, Result, Services, error, internal, viewer_uri};

/// Who a post is for.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Unlisted,
    FollowersOnly,
    Direct,
}

impl Visibility {
    pub fn from_db(s: &str) -> Self {
        match s {
            "public" => Self::Public,
            "unlisted" => Self::Unlisted,
            "followers_only" => Self::FollowersOnly,
            _ => Self::Direct,
        }
    }
}

impl From<Visibility> for chorus_domain::posts::Visibility {
    fn from(v: Visibility) -> Self {
        match v {
            Visibility::Public => Self::Public,
            Visibility::Unlisted => Self::Unlisted,
            Visibility::FollowersOnly => Self::FollowersOnly,
            Visibility::Direct => Self::Direct,
        }
    }
}

/// An actor (a person's account), local or remote.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Actor {
    /// The ActivityPub id.
    pub id: ID,
    pub handle: String,
    pub domain: String,
    pub local: bool,
    pub display_name: Option<String>,
    /// Follow requests need approval.
    pub locked: bool,
}

pub(crate) const ACTOR_COLUMNS: &str =
    "a.uri, a.handle, a.domain, a.local, a.display_name, a.locked";

impl Actor {
    pub(crate) fn from_row(row: &PgRow, offset: usize) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: ID(row.try_get(offset)?),
            handle: row.try_get(offset + 1)?,
            domain: row.try_get(offset + 2)?,
            local: row.try_get(offset + 3)?,
            display_name: row.try_get(offset + 4)?,
            locked: row.try_get(offset + 5)?,
        })
    }

    pub(crate) async fn by_uri(
        pool: &PgPool,
        uri: &str,
    ) -> std::result::Result<Option<Self>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {ACTOR_COLUMNS} FROM actors a WHERE a.uri = $1 AND a.deleted_at IS NULL"
        ))
        .bind(uri)
        .fetch_optional(pool)
        .await?;
        row.map(|r| Self::from_row(&r, 0)).transpose()
    }
}

async fn count(pool: &PgPool, sql: &str, bind: &str) -> Result<i64> {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(pool)
        .await
        .map_err(internal)
}

#[ComplexObject]
impl Actor {
    /// `handle@domain`.
    async fn acct(&self) -> String {
        format!("{}@{}", self.handle, self.domain)
    }

    async fn followers_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let s = ctx.data::<Services>()?;
        count(
            s.reads(ctx),
            "SELECT count(*) FROM follows WHERE followee = $1 AND state = 'accepted'",
            &self.id,
        )
        .await
    }

    async fn following_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let s = ctx.data::<Services>()?;
        count(
            s.reads(ctx),
            "SELECT count(*) FROM follows WHERE follower = $1 AND state = 'accepted'",
            &self.id,
        )
        .await
    }

    async fn posts_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let s = ctx.data::<Services>()?;
        count(s.reads(ctx), "SELECT count(*) FROM posts WHERE author = $1 AND deleted_at IS NULL AND visibility IN ('public', 'unlisted')", &self.id).await
    }

    /// How the signed-in actor relates to this one.
    async fn relationship(&self, ctx: &Context<'_>) -> Result<Option<Relationship>> {
        let Some(viewer) = viewer_uri(ctx) else {
            return Ok(None);
        };
        let s = ctx.data::<Services>()?;
        Relationship::between(s.reads(ctx), &viewer, &self.id)
            .await
            .map(Some)
    }
}

/// Where a follow stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum FollowState {
    None,
    Requested,
    Accepted,
    Rejected,
}

impl FollowState {
    fn from_db(s: Option<String>) -> Self {
        match s.as_deref() {
            Some("requested") => Self::Requested,
            Some("accepted") => Self::Accepted,
            Some("rejected") => Self::Rejected,
            _ => Self::None,
        }
    }
}

/// The signed-in actor's relationship with another.
#[derive(SimpleObject, Clone, Debug)]
pub struct Relationship {
    /// The other actor.
    pub actor: ID,
    /// Whether I follow them.
    pub following: FollowState,
    /// Whether they follow me.
    pub followed_by: FollowState,
    pub blocking: bool,
    pub blocked_by: bool,
}

impl Relationship {
    pub(crate) async fn between(pool: &PgPool, me: &str, other: &str) -> Result<Self> {
        let row: (Option<String>, Option<String>, bool, bool) = sqlx::query_as(
            "SELECT (SELECT state FROM follows WHERE follower = $1 AND followee = $2),
                    (SELECT state FROM follows WHERE follower = $2 AND followee = $1),
                    EXISTS (SELECT 1 FROM blocks WHERE blocker = $1 AND blocked = $2),
                    EXISTS (SELECT 1 FROM blocks WHERE blocker = $2 AND blocked = $1)",
        )
        .bind(me)
        .bind(other)
        .fetch_one(pool)
        .await
        .map_err(internal)?;
        Ok(Self {
            actor: ID(other.to_owned()),
            following: FollowState::from_db(row.0),
            followed_by: FollowState::from_db(row.1),
            blocking: row.2,
            blocked_by: row.3,
        })
    }
}

/// A post (a Note).
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Post {
    /// The post's id (a UUID for local posts).
    pub id: ID,
    /// The ActivityPub id.
    pub uri: String,
    pub author: Actor,
    /// Sanitised HTML.
    pub content: String,
    /// Content warning.
    pub summary: Option<String>,
    pub sensitive: bool,
    pub visibility: Visibility,
    pub published: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    /// The ids of mentioned actors.
    pub mentions: Vec<String>,
    pub hashtags: Vec<String>,
    pub favorites_count: i64,
    pub reblogs_count: i64,
    pub replies_count: i64,
    #[graphql(skip)]
    pub in_reply_to_uri: Option<String>,
}

/// Columns for [`Post::from_row`]; `p` is `posts`, `a` the author in `actors`.
pub(crate) const POST_COLUMNS: &str = "p.uri, p.post_id::text, p.content, p.summary, p.sensitive, p.visibility, \
     p.published, p.edited_at, p.mentions, p.hashtags, p.in_reply_to, \
     (SELECT count(*) FROM favorites fv WHERE fv.post = p.uri), \
     (SELECT count(*) FROM reblogs rb WHERE rb.post = p.uri), \
     (SELECT count(*) FROM posts rp WHERE rp.in_reply_to = p.uri AND rp.deleted_at IS NULL), \
     a.uri, a.handle, a.domain, a.local, a.display_name, a.locked, p.position_major, p.position_minor";

/// Which posts `$1` (the viewer's id, or NULL) may see: not deleted; public
/// or unlisted, or theirs, or mentioning them, or followers-only from
/// someone they follow; and no block between them and the author.
pub(crate) const VISIBLE: &str = "p.deleted_at IS NULL
    AND (p.visibility IN ('public', 'unlisted')
         OR p.author = $1
         OR $1 = ANY (p.mentions)
         OR (p.visibility = 'followers_only' AND EXISTS (
                SELECT 1 FROM follows f WHERE f.follower = $1 AND f.followee = p.author AND f.state = 'accepted')))
    AND NOT EXISTS (SELECT 1 FROM blocks b
                    WHERE (b.blocker = $1 AND b.blocked = p.author) OR (b.blocker = p.author AND b.blocked = $1))
    AND NOT EXISTS (SELECT 1 FROM blocked_instances bi WHERE bi.domain = p.domain)";

impl Post {
    pub(crate) fn from_row(row: &PgRow) -> std::result::Result<(Self, (i64, i64)), sqlx::Error> {
        let uri: String = row.try_get(0)?;
        let id: Option<String> = row.try_get(1)?;
        let visibility: String = row.try_get(5)?;
        Ok((
            Self {
                id: ID(id.unwrap_or_else(|| uri.clone())),
                uri,
                content: row.try_get(2)?,
                summary: row.try_get(3)?,
                sensitive: row.try_get(4)?,
                visibility: Visibility::from_db(&visibility),
                published: row.try_get(6)?,
                edited_at: row.try_get(7)?,
                mentions: row.try_get(8)?,
                hashtags: row.try_get(9)?,
                in_reply_to_uri: row.try_get(10)?,
                favorites_count: row.try_get(11)?,
                reblogs_count: row.try_get(12)?,
                replies_count: row.try_get(13)?,
                author: Actor::from_row(row, 14)?,
            },
            (row.try_get(20)?, row.try_get(21)?),
        ))
    }

    /// The post `uri` if `viewer` may see it.
    pub(crate) async fn visible(
        pool: &PgPool,
        viewer: Option<&str>,
        uri: &str,
    ) -> Result<Option<Self>> {
        let row = sqlx::query(&format!(
            "SELECT {POST_COLUMNS} FROM posts p JOIN actors a ON a.uri = p.author WHERE p.uri = $2 AND {VISIBLE}"
        ))
        .bind(viewer)
        .bind(uri)
        .fetch_optional(pool)
        .await
        .map_err(internal)?;
        row.map(|r| Post::from_row(&r).map(|p| p.0))
            .transpose()
            .map_err(internal)
    }
}

/// `post_edits` columns: version, content, summary, sensitive, edited_at.
type EditRow = (i32, String, Option<String>, bool, DateTime<Utc>);

/// One version of a post's text.
#[derive(SimpleObject, Clone, Debug)]
pub struct PostEdit {
    /// 1 is the original.
    pub version: i32,
    pub content: String,
    pub summary: Option<String>,
    pub sensitive: bool,
    pub edited_at: DateTime<Utc>,
}

#[ComplexObject]
impl Post {
    /// The post this one replies to, if the viewer may see it.
    async fn in_reply_to(&self, ctx: &Context<'_>) -> Result<Option<Post>> {
        let Some(parent) = &self.in_reply_to_uri else {
            return Ok(None);
        };
        let s = ctx.data::<Services>()?;
        Post::visible(s.reads(ctx), viewer_uri(ctx).as_deref(), parent).await
    }

    /// Whether the signed-in actor favorited it.
    async fn favorited(&self, ctx: &Context<'_>) -> Result<bool> {
        let Some(viewer) = viewer_uri(ctx) else {
            return Ok(false);
        };
        let s = ctx.data::<Services>()?;
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM favorites WHERE actor = $1 AND post = $2)")
            .bind(viewer)
            .bind(&self.uri)
            .fetch_one(s.reads(ctx))
            .await
            .map_err(internal)
    }

    /// Whether the signed-in actor reblogged it.
    async fn reblogged(&self, ctx: &Context<'_>) -> Result<bool> {
        let Some(viewer) = viewer_uri(ctx) else {
            return Ok(false);
        };
        let s = ctx.data::<Services>()?;
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM reblogs WHERE actor = $1 AND post = $2)")
            .bind(viewer)
            .bind(&self.uri)
            .fetch_one(s.reads(ctx))
            .await
            .map_err(internal)
    }

    /// Every version of its text, oldest first.
    async fn edits(&self, ctx: &Context<'_>) -> Result<Vec<PostEdit>> {
        let s = ctx.data::<Services>()?;
        let rows: Vec<EditRow> = sqlx::query_as(
            "SELECT version, content, summary, sensitive, edited_at FROM post_edits WHERE post_uri = $1 ORDER BY version",
        )
        .bind(&self.uri)
        .fetch_all(s.reads(ctx))
        .await
        .map_err(internal)?;
        Ok(rows
            .into_iter()
            .map(
                |(version, content, summary, sensitive, edited_at)| PostEdit {
                    version,
                    content,
                    summary,
                    sensitive,
                    edited_at,
                },
            )
            .collect())
    }
}

/// An entry of a timeline: a post, or someone's reblog of it.
#[derive(SimpleObject, Clone, Debug)]
pub struct TimelineItem {
    pub post: Post,
    pub reblogged_by: Option<Actor>,
}

/// What a notification is about.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum NotificationKind {
    Followed,
    FollowRequested,
    Favorited,
    Reblogged,
    Mentioned,
}

/// Something that happened to the signed-in actor.
#[derive(SimpleObject, Clone, Debug)]
pub struct Notification {
    pub kind: NotificationKind,
    pub actor: Actor,
    pub post: Option<Post>,
    pub created_at: DateTime<Utc>,
}

/// Parses a page request: at most [`MAX_PAGE`] items after a cursor.
pub(crate) fn page_args(first: Option<i32>, after: Option<String>) -> Result<(i64, (i64, i64))> {
    let first = first.unwrap_or(20);
    if !(0..=MAX_PAGE).contains(&first) {
        return Err(error(
            "INVALID_INPUT",
            format!("`first` must be between 0 and {MAX_PAGE}"),
        ));
    }
    let cursor = match after {
        Some(c) => {
            let position: chorus_domain::Position = c
                .parse()
                .map_err(|_| error("INVALID_INPUT", "`after` is not a cursor from this API"))?;
            (
                i64::try_from(position.major()).unwrap_or(i64::MAX),
                i64::try_from(position.minor()).unwrap_or(i64::MAX),
            )
        }
        None => (i64::MAX, i64::MAX),
    };
    Ok((i64::from(first), cursor))
}

/// A connection from rows fetched newest first, one more than the page size.
pub(crate) fn connection<T: async_graphql::OutputType>(
    mut items: Vec<(T, (i64, i64))>,
    first: i64,
    after_given: bool,
) -> Connection<String, T> {
    let has_next = items.len() as i64 > first;
    items.truncate(usize::try_from(first).unwrap_or(0));
    let mut connection = Connection::new(after_given, has_next);
    connection.edges.extend(
        items
            .into_iter()
            .map(|(node, (major, minor))| Edge::new(format!("{major}.{minor}"), node)),
    );
    connection
}

/// A domain's standing with this server.
#[derive(SimpleObject, Clone, Debug)]
pub struct InstanceBlock {
    /// The normalised domain (lower case, with a port if it has one).
    pub domain: String,
    pub blocked: bool,
    pub reason: Option<String>,
    pub blocked_at: Option<DateTime<Utc>>,
}

impl InstanceBlock {
    pub(crate) async fn of(services: &Services, domain: String) -> Result<Self> {
        let row = services
            .app
            .blocked_instances()
            .await
            .map_err(|e| super::GraphqlError::from(e).0)?
            .into_iter()
            .find(|b| b.domain == domain);
        Ok(match row {
            Some(b) => Self::from(b),
            None => Self {
                domain,
                blocked: false,
                reason: None,
                blocked_at: None,
            },
        })
    }
}

impl From<crate::app::BlockedInstance> for InstanceBlock {
    fn from(b: crate::app::BlockedInstance) -> Self {
        Self {
            domain: b.domain,
            blocked: true,
            reason: b.reason,
            blocked_at: Some(b.blocked_at),
        }
    }
}
