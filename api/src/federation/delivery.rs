//! Starting delivery: the planner (in `chorus serve`, beside the
//! projections whose read models it reads) and the senders (in `chorus
//! serve` by default, and in every `chorus worker`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chorus_domain::Position;
use chorus_postgres::PgEventStore;
use chorus_projections::Projections;
use chorus_workers::delivery::{Planner, ReadModels, SenderOptions, Senders};
use tokio::sync::Notify;

use super::Federation;
use crate::config::FederationSettings;

/// Delivery running in this process.
#[derive(Debug)]
pub struct Delivery {
    pub planner: Planner,
    /// `None` when other processes send (`delivery_in_process = false`).
    pub senders: Option<Senders>,
}

impl Delivery {
    /// Starts the planner and, unless the settings say otherwise, the
    /// senders, with the settings' limits and the production retry timings.
    pub async fn start(
        store: PgEventStore,
        federation: &Federation,
        projections: Arc<Projections>,
        base_url: &str,
    ) -> Result<Self, sqlx::Error> {
        let options = sender_options(&federation.settings);
        Self::start_with(store, federation, projections, base_url, options).await
    }

    /// The same with these sender options.
    pub async fn start_with(
        store: PgEventStore,
        federation: &Federation,
        projections: Arc<Projections>,
        base_url: &str,
        options: SenderOptions,
    ) -> Result<Self, sqlx::Error> {
        let wake = Arc::new(Notify::new());
        let planner = Planner::start(
            store.clone(),
            base_url,
            Arc::new(Projected(projections)),
            wake.clone(),
        )
        .await?;
        let senders = federation.settings.delivery_in_process.then(|| {
            Senders::start_counting(
                store,
                federation.fetcher.clone(),
                wake,
                options,
                federation.delivery_outcomes.clone(),
            )
        });
        Ok(Self { planner, senders })
    }
}

/// The senders' options as the settings give them.
pub fn sender_options(settings: &FederationSettings) -> SenderOptions {
    // A lease shorter than a delivery could take would let a second worker
    // send a job still in flight.
    let lease = settings
        .delivery_lease_secs
        .max(2 * settings.request_timeout_secs + 1);
    SenderOptions {
        concurrency: settings.delivery_concurrency.max(1),
        per_host: settings.delivery_per_host.max(1),
        lease: Duration::from_secs(lease),
        ..SenderOptions::default()
    }
}

/// The projections of this process, as the planner waits for them.
#[derive(Debug)]
pub struct Projected(pub Arc<Projections>);

#[async_trait]
impl ReadModels for Projected {
    async fn caught_up(&self, position: Position) {
        while !self.0.wait_for(position, Duration::from_secs(60)).await {
            tracing::warn!(%position, "delivery planning waits for the projections");
        }
    }
}
