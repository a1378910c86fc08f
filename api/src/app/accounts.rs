//! Creating local accounts.

use chorus_domain::actors::{self, ActorState, Handle, RegisterActor};
use chorus_domain::{ExpectedVersion, Metadata};
use chorus_postgres::PgEventStore;
use uuid::Uuid;

use super::{App, AppError, LocalActor};
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
        match PgEventStore::append_with(&mut tx, &stream, ExpectedVersion::NoStream, &new_events)
            .await
        {
            Ok(_) => {}
            Err(chorus_domain::EventStoreError::WrongExpectedVersion { .. }) => {
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
}
