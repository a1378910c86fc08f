//! Creating and deleting local accounts.

use chorus_domain::actors::{self, ActorState, Handle, RegisterActor};
use chorus_domain::{EventStoreError, ExpectedVersion, Metadata, Position};
use uuid::Uuid;

use super::{ATTEMPTS, App, AppError, LocalActor};
use crate::{keys, tokens};

/// A created account and its first API token (shown once).
#[derive(Debug)]
pub struct NewAccount {
    pub actor: LocalActor,
    pub token: tokens::NewToken,
}

impl App {
    /// Creates a local account with its own key pair and a first API token.
    /// The registration event, the private key and the token commit together.
    pub async fn create_account(
        &self,
        handle: &str,
        display_name: Option<String>,
        locked: bool,
        admin: bool,
    ) -> Result<NewAccount, AppError> {
        let handle = Handle::parse(handle)?;
        let stream = actors::actor_stream(&handle);
        let (state, _) = self.load::<ActorState>(&stream).await?;
        let keys = keys::generate()?;
        let actor_id = Uuid::now_v7();
        let events = actors::register(
            &state,
            RegisterActor {
                actor_id,
                handle: handle.clone(),
                display_name,
                locked,
                admin,
                public_key_pem: keys.public_pem.clone(),
            },
            &self.base_url,
            chrono::Utc::now(),
        )?;
        let registered = match events.first() {
            Some(chorus_domain::DomainEvent::ActorRegistered(e)) => e.clone(),
            _ => return Err(AppError::Invalid("registration decided nothing".into())),
        };
        let new_events = events
            .iter()
            .map(|e| {
                e.to_new_event().map(|n| {
                    n.with_metadata(Metadata {
                        actor: Some(registered.uris.id.clone()),
                        ..Metadata::default()
                    })
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AppError::Invalid(e.to_string()))?;

        let mut tx = self.pool.begin().await?;
        match self
            .store
            .append_in(&mut tx, &stream, ExpectedVersion::NoStream, &new_events)
            .await
        {
            Ok(_) => {}
            Err(EventStoreError::WrongExpectedVersion { .. }) => {
                return Err(actors::ActorError::HandleTaken(handle).into());
            }
            Err(e) => return Err(e.into()),
        }
        sqlx::query("INSERT INTO actor_keys (actor_id, private_key_pem) VALUES ($1, $2)")
            .bind(actor_id)
            .bind(&keys.private_pem)
            .execute(&mut *tx)
            .await?;
        let token = tokens::create(
            &mut *tx,
            actor_id,
            &registered.uris.id,
            Some("created with the account"),
        )
        .await?;
        tx.commit().await?;
        self.store.appended();
        Ok(NewAccount {
            actor: LocalActor::from(&registered),
            token,
        })
    }

    /// Deletes the local account `handle`, as `by` (the account itself or
    /// an admin; `None` for the command line). The `ActorDeleted` event
    /// (with the Delete{Person} to deliver) and the revocation of every
    /// token of the account commit together, so it cannot sign in from
    /// then on; its content is then erased by the erasure subscriber.
    /// Returns the actor's id and the event's position.
    pub async fn delete_account(
        &self,
        by: Option<&LocalActor>,
        handle: &str,
    ) -> Result<(String, Option<Position>), AppError> {
        let handle = Handle::parse(handle).map_err(|_| AppError::NotFound {
            what: "account",
            id: handle.to_owned(),
        })?;
        if let Some(by) = by
            && by.handle != handle
            && !by.admin
        {
            return Err(AppError::Forbidden);
        }
        let stream = actors::actor_stream(&handle);
        for _ in 0..ATTEMPTS {
            let (state, version) = self.load::<ActorState>(&stream).await?;
            let events = actors::delete(&state, chrono::Utc::now())?;
            let Some(chorus_domain::DomainEvent::ActorDeleted(deleted)) = events.first() else {
                return Err(AppError::Invalid("the deletion decided nothing".into()));
            };
            let metadata = Metadata {
                actor: Some(by.map_or_else(|| deleted.uri.clone(), |by| by.uri.clone())),
                correlation_id: Some(Uuid::now_v7()),
                ..Metadata::default()
            };
            let new_events = events
                .iter()
                .map(|e| e.to_new_event().map(|n| n.with_metadata(metadata.clone())))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AppError::Invalid(e.to_string()))?;
            let mut tx = self.pool.begin().await?;
            let outcome = match self
                .store
                .append_in(
                    &mut tx,
                    &stream,
                    ExpectedVersion::Exact(version),
                    &new_events,
                )
                .await
            {
                Ok(outcome) => outcome,
                Err(EventStoreError::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = now() WHERE actor_id = $1 AND revoked_at IS NULL",
            )
            .bind(deleted.actor_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.store.appended();
            return Ok((deleted.uri.clone(), outcome.last_position()));
        }
        Err(AppError::Contended)
    }
}
