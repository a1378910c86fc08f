//! Follows and blocks between two actors.
//!
//! Both directions of a pair of actors live in one stream, so that a block
//! and the follows it ends are decided, and appended, together.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StreamId;
use crate::activitypub;
use crate::actors::actor_key;
use crate::events::DomainEvent;

/// The stream shared by actors `a` and `b` (in either order).
pub fn relationship_stream(a: &str, b: &str) -> StreamId {
    let (x, y) = {
        let (ka, kb) = (actor_key(a), actor_key(b));
        if ka <= kb { (ka, kb) } else { (kb, ka) }
    };
    StreamId::composed(format!("relationship-{x}-{y}"))
}

/// `follower` asked to follow `followee`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowRequested {
    pub follower: String,
    pub followee: String,
    /// The Follow activity's id, which Accept and Reject refer to.
    pub follow_id: String,
    pub activity: Value,
}

/// `followee` accepted (or, for unlocked accounts, was deemed to accept) a follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowAccepted {
    pub follower: String,
    pub followee: String,
    pub follow_id: String,
    /// True when no one decided: the followee's account is not locked.
    pub automatic: bool,
    pub activity: Value,
}

/// `followee` refused a follow request, or removed a follower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowRejected {
    pub follower: String,
    pub followee: String,
    pub follow_id: String,
    pub activity: Value,
}

/// `follower` stopped following `followee` (or withdrew the request).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unfollowed {
    pub follower: String,
    pub followee: String,
    pub follow_id: String,
    pub activity: Value,
}

/// A follow ended because one of the two blocked the other. Not delivered:
/// the remote side learns of the block itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowSevered {
    pub follower: String,
    pub followee: String,
    pub follow_id: String,
}

/// `blocker` blocked `blocked`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Blocked {
    pub blocker: String,
    pub blocked: String,
    pub block_id: String,
    pub activity: Value,
}

/// `blocker` lifted its block of `blocked`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unblocked {
    pub blocker: String,
    pub blocked: String,
    pub block_id: String,
    pub activity: Value,
}

/// Where a follow in one direction stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Follow {
    Requested { follow_id: String, activity: Value },
    Accepted { follow_id: String, activity: Value },
}

/// What the pair's stream says so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RelationshipState {
    /// (follower, followee) → the follow.
    follows: Vec<((String, String), Follow)>,
    /// (blocker, blocked) → the Block activity.
    blocks: Vec<((String, String), (String, Value))>,
}

impl RelationshipState {
    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::FollowRequested(e) => self.set_follow(
                &e.follower,
                &e.followee,
                Some(Follow::Requested {
                    follow_id: e.follow_id.clone(),
                    activity: e.activity.clone(),
                }),
            ),
            DomainEvent::FollowAccepted(e) => {
                let activity = match self.follow(&e.follower, &e.followee) {
                    Some(
                        Follow::Requested { activity, .. } | Follow::Accepted { activity, .. },
                    ) => activity.clone(),
                    None => Value::Null,
                };
                self.set_follow(
                    &e.follower,
                    &e.followee,
                    Some(Follow::Accepted {
                        follow_id: e.follow_id.clone(),
                        activity,
                    }),
                );
            }
            DomainEvent::FollowRejected(e) => self.set_follow(&e.follower, &e.followee, None),
            DomainEvent::Unfollowed(e) => self.set_follow(&e.follower, &e.followee, None),
            DomainEvent::FollowSevered(e) => self.set_follow(&e.follower, &e.followee, None),
            DomainEvent::Blocked(e) => {
                self.blocks
                    .retain(|(k, _)| k != &(e.blocker.clone(), e.blocked.clone()));
                self.blocks.push((
                    (e.blocker.clone(), e.blocked.clone()),
                    (e.block_id.clone(), e.activity.clone()),
                ));
            }
            DomainEvent::Unblocked(e) => self
                .blocks
                .retain(|(k, _)| k != &(e.blocker.clone(), e.blocked.clone())),
            _ => {}
        }
    }

    fn set_follow(&mut self, follower: &str, followee: &str, follow: Option<Follow>) {
        self.follows
            .retain(|((a, b), _)| !(a == follower && b == followee));
        if let Some(follow) = follow {
            self.follows
                .push(((follower.to_owned(), followee.to_owned()), follow));
        }
    }

    /// The follow from `follower` to `followee`, if any.
    pub fn follow(&self, follower: &str, followee: &str) -> Option<&Follow> {
        self.follows
            .iter()
            .find(|((a, b), _)| a == follower && b == followee)
            .map(|(_, f)| f)
    }

    /// Whether `follower` follows `followee` (accepted).
    pub fn follows(&self, follower: &str, followee: &str) -> bool {
        matches!(
            self.follow(follower, followee),
            Some(Follow::Accepted { .. })
        )
    }

    /// Whether `blocker` blocks `blocked`.
    pub fn blocks(&self, blocker: &str, blocked: &str) -> bool {
        self.blocks
            .iter()
            .any(|((a, b), _)| a == blocker && b == blocked)
    }

    /// Whether either blocks the other.
    pub fn blocked_either_way(&self, a: &str, b: &str) -> bool {
        self.blocks(a, b) || self.blocks(b, a)
    }
}

/// Why a relationship command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelationshipError {
    #[error("you cannot follow yourself")]
    SelfFollow,
    #[error("you cannot block yourself")]
    SelfBlock,
    #[error("you already follow this actor")]
    AlreadyFollowing,
    #[error("your follow request is waiting for approval")]
    AlreadyRequested,
    #[error("you do not follow this actor")]
    NotFollowing,
    #[error("there is no follow request from this actor")]
    NoFollowRequest,
    #[error("you cannot interact with this actor: one of you blocks the other")]
    Blocked,
    #[error("you already block this actor")]
    AlreadyBlocked,
    #[error("you do not block this actor")]
    NotBlocked,
}

impl RelationshipError {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SelfFollow => "SELF_FOLLOW",
            Self::SelfBlock => "SELF_BLOCK",
            Self::AlreadyFollowing => "ALREADY_FOLLOWING",
            Self::AlreadyRequested => "ALREADY_REQUESTED",
            Self::NotFollowing => "NOT_FOLLOWING",
            Self::NoFollowRequest => "NO_FOLLOW_REQUEST",
            Self::Blocked => "BLOCKED",
            Self::AlreadyBlocked => "ALREADY_BLOCKED",
            Self::NotBlocked => "NOT_BLOCKED",
        }
    }
}

/// The actor being followed, as a follow decision needs it.
#[derive(Clone, Debug)]
pub struct Followee {
    pub uri: String,
    /// Requests wait for approval.
    pub locked: bool,
    /// A local actor answers at once; a remote one answers with Accept or Reject later.
    pub local: bool,
}

/// Decides `follower`'s follow of `followee`. `activity_id` is the id of the
/// Follow; for an unlocked local followee, `accept_id` is the Accept's.
pub fn follow(
    state: &RelationshipState,
    follower: &str,
    followee: &Followee,
    activity_id: &str,
    accept_id: &str,
) -> Result<Vec<DomainEvent>, RelationshipError> {
    if follower == followee.uri {
        return Err(RelationshipError::SelfFollow);
    }
    if state.blocked_either_way(follower, &followee.uri) {
        return Err(RelationshipError::Blocked);
    }
    match state.follow(follower, &followee.uri) {
        Some(Follow::Accepted { .. }) => return Err(RelationshipError::AlreadyFollowing),
        Some(Follow::Requested { .. }) => return Err(RelationshipError::AlreadyRequested),
        None => {}
    }
    let to = [followee.uri.clone()];
    let activity = activitypub::activity(
        activity_id,
        "Follow",
        follower,
        Value::String(followee.uri.clone()),
        &to,
        &[],
    );
    let mut events = vec![DomainEvent::FollowRequested(FollowRequested {
        follower: follower.to_owned(),
        followee: followee.uri.clone(),
        follow_id: activity_id.to_owned(),
        activity: activity.clone(),
    })];
    if followee.local && !followee.locked {
        events.push(accepted(
            follower,
            &followee.uri,
            activity_id,
            activity,
            accept_id,
            true,
        ));
    }
    Ok(events)
}

fn accepted(
    follower: &str,
    followee: &str,
    follow_id: &str,
    follow: Value,
    accept_id: &str,
    automatic: bool,
) -> DomainEvent {
    let mut follow = follow;
    if let Some(map) = follow.as_object_mut() {
        map.remove("@context");
    }
    DomainEvent::FollowAccepted(FollowAccepted {
        follower: follower.to_owned(),
        followee: followee.to_owned(),
        follow_id: follow_id.to_owned(),
        automatic,
        activity: activitypub::activity(
            accept_id,
            "Accept",
            followee,
            follow,
            &[follower.to_owned()],
            &[],
        ),
    })
}

/// Decides `followee`'s approval of `follower`'s pending request.
pub fn approve(
    state: &RelationshipState,
    followee: &str,
    follower: &str,
    accept_id: &str,
) -> Result<Vec<DomainEvent>, RelationshipError> {
    match state.follow(follower, followee) {
        Some(Follow::Requested {
            follow_id,
            activity,
        }) => Ok(vec![accepted(
            follower,
            followee,
            follow_id,
            activity.clone(),
            accept_id,
            false,
        )]),
        _ => Err(RelationshipError::NoFollowRequest),
    }
}

/// Decides `followee`'s refusal of `follower`'s request (or removal of an
/// accepted follower).
pub fn reject(
    state: &RelationshipState,
    followee: &str,
    follower: &str,
    reject_id: &str,
) -> Result<Vec<DomainEvent>, RelationshipError> {
    let (follow_id, mut follow) = match state.follow(follower, followee) {
        Some(
            Follow::Requested {
                follow_id,
                activity,
            }
            | Follow::Accepted {
                follow_id,
                activity,
            },
        ) => (follow_id.clone(), activity.clone()),
        None => return Err(RelationshipError::NoFollowRequest),
    };
    if let Some(map) = follow.as_object_mut() {
        map.remove("@context");
    }
    Ok(vec![DomainEvent::FollowRejected(FollowRejected {
        follower: follower.to_owned(),
        followee: followee.to_owned(),
        follow_id,
        activity: activitypub::activity(
            reject_id,
            "Reject",
            followee,
            follow,
            &[follower.to_owned()],
            &[],
        ),
    })])
}

/// Decides `follower`'s unfollow (or withdrawal of a pending request).
pub fn unfollow(
    state: &RelationshipState,
    follower: &str,
    followee: &str,
    undo_id: &str,
) -> Result<Vec<DomainEvent>, RelationshipError> {
    let (follow_id, follow) = match state.follow(follower, followee) {
        Some(
            Follow::Requested {
                follow_id,
                activity,
            }
            | Follow::Accepted {
                follow_id,
                activity,
            },
        ) => (follow_id.clone(), activity.clone()),
        None => return Err(RelationshipError::NotFollowing),
    };
    Ok(vec![DomainEvent::Unfollowed(Unfollowed {
        follower: follower.to_owned(),
        followee: followee.to_owned(),
        follow_id,
        activity: activitypub::undo(undo_id, follower, follow, &[followee.to_owned()], &[]),
    })])
}

/// Decides `blocker`'s block of `blocked`: the block, and the end of any
/// follow between them, in either direction.
pub fn block(
    state: &RelationshipState,
    blocker: &str,
    blocked: &str,
    block_id: &str,
) -> Result<Vec<DomainEvent>, RelationshipError> {
    if blocker == blocked {
        return Err(RelationshipError::SelfBlock);
    }
    if state.blocks(blocker, blocked) {
        return Err(RelationshipError::AlreadyBlocked);
    }
    let activity = activitypub::activity(
        block_id,
        "Block",
        blocker,
        Value::String(blocked.to_owned()),
        &[blocked.to_owned()],
        &[],
    );
    let mut events = vec![DomainEvent::Blocked(Blocked {
        blocker: blocker.to_owned(),
        blocked: blocked.to_owned(),
        block_id: block_id.to_owned(),
        activity,
    })];
    for (follower, followee) in [(blocker, blocked), (blocked, blocker)] {
        if let Some(Follow::Requested { follow_id, .. } | Follow::Accepted { follow_id, .. }) =
            state.follow(follower, followee)
        {
            events.push(DomainEvent::FollowSevered(FollowSevered {
                follower: follower.to_owned(),
                followee: followee.to_owned(),
                follow_id: follow_id.clone(),
            }));
        }
    }
    Ok(events)
}

/// Decides `blocker`'s unblock of `blocked`.
pub fn unblock(
    state: &RelationshipState,
    blocker: &str,
    blocked: &str,
    undo_id: &str,
) -> Result<Vec<DomainEvent>, RelationshipError> {
    let Some((_, (block_id, activity))) = state
        .blocks
        .iter()
        .find(|((a, b), _)| a == blocker && b == blocked)
    else {
        return Err(RelationshipError::NotBlocked);
    };
    Ok(vec![DomainEvent::Unblocked(Unblocked {
        blocker: blocker.to_owned(),
        blocked: blocked.to_owned(),
        block_id: block_id.clone(),
        activity: activitypub::undo(
            undo_id,
            blocker,
            activity.clone(),
            &[blocked.to_owned()],
            &[],
        ),
    })])
}
