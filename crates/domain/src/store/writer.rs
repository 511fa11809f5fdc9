//! `ConfigWriter`: the one way the control plane changes configuration. Each write bumps the
//! config version (inside the store function) and, once it is done, publishes the change event
//! that tells every data plane — so no write can forget to.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};

use super::{NewApi, StoreResult, TenantChange};
use crate::apikey::ApiKey;
use crate::entities::{api, api_key, api_route, api_target, client, plan, signing_key, tenant};
use crate::events::{Change, Publisher};
use crate::jwt::TokenSecret;
use crate::plan::{Enforcement, PlanLimits};
use crate::resilience::{ApiResilience, NewTarget};
use crate::route::NewRoute;

/// Writes configuration and announces each write to the data planes.
#[derive(Clone)]
pub struct ConfigWriter {
    db: DatabaseConnection,
    publisher: Publisher,
    /// Seals the tenants' token signing keys (`None`: no token key configured).
    token_secret: Option<Arc<TokenSecret>>,
}

impl ConfigWriter {
    pub fn new(db: DatabaseConnection, publisher: Publisher) -> Self {
        Self {
            db,
            publisher,
            token_secret: None,
        }
    }

    /// The same, sealing the signing keys it makes with `secret`.
    #[must_use]
    pub fn with_token_secret(mut self, secret: Option<TokenSecret>) -> Self {
        self.token_secret = secret.map(Arc::new);
        self
    }

    /// What seals the tenants' signing keys, when a token key is configured.
    pub fn token_secret(&self) -> Option<&TokenSecret> {
        self.token_secret.as_deref()
    }

    /// Registers an API; one that takes tokens or signs identity tokens gets its tenant a
    /// signing key (when a token key is configured: else minting answers that none is).
    pub async fn create_api(&self, tenant_id: i64, new: NewApi) -> StoreResult<api::Model> {
        let signs = new.auth.takes_token() || new.identity_token;
        let out = super::create_api(&self.db, tenant_id, new).await?;
        if signs {
            self.ensure_key_quietly(tenant_id).await;
        }
        self.publisher.changed(&self.db, &Change::Any).await;
        Ok(out)
    }

    /// Changes an API (see [`Self::create_api`] for the signing key).
    pub async fn update_api(
        &self,
        tenant_id: i64,
        id: i64,
        new: NewApi,
        is_active: bool,
    ) -> StoreResult<api::Model> {
        let signs = new.auth.takes_token() || new.identity_token;
        let out = super::update_api(&self.db, tenant_id, id, new, is_active).await?;
        if signs {
            self.ensure_key_quietly(tenant_id).await;
        }
        self.publisher.changed(&self.db, &Change::Any).await;
        Ok(out)
    }

    async fn ensure_key_quietly(&self, tenant_id: i64) {
        if let Some(secret) = &self.token_secret
            && let Err(e) = super::ensure_signing_key(&self.db, secret, tenant_id).await
        {
            tracing::warn!(tenant_id, error = %e, "could not make the tenant's signing key");
        }
    }

    /// A transaction whose writes are announced by [`Self::commit`].
    pub async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.db.begin().await
    }

    /// Commits a transaction from [`Self::begin`] and announces what it wrote.
    pub async fn commit(&self, txn: DatabaseTransaction) -> Result<(), DbErr> {
        txn.commit().await?;
        self.publisher.changed(&self.db, &Change::Any).await;
        Ok(())
    }
}

/// Each entry: a store write, its arguments after the connection, what it returns, and the change
/// it announces (`Change::Any`, or the keys it touched, which data planes apply without a reload).
macro_rules! config_writes {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => |$out:pat_param| $change:expr;
    )*) => {
        impl ConfigWriter {
            $(
                $(#[$doc])*
                pub async fn $name(&self, $($arg: $ty),*) -> StoreResult<$ret> {
                    let out = super::$name(&self.db, $($arg),*).await?;
                    let change = {
                        let $out = &out;
                        $change
                    };
                    self.publisher.changed(&self.db, &change).await;
                    Ok(out)
                }
            )*
        }
    };
}

config_writes! {
    fn create_plan(tenant_id: i64, name: &str, limits: PlanLimits, enforcement: Enforcement)
        -> plan::Model => |_| Change::Any;
    fn update_plan(tenant_id: i64, id: i64, name: &str, limits: PlanLimits, enforcement: Enforcement)
        -> plan::Model => |_| Change::Any;
    fn delete_plan(tenant_id: i64, id: i64) -> () => |()| Change::Any;
    fn set_api_active(tenant_id: i64, id: i64, active: bool) -> api::Model => |_| Change::Any;
    fn delete_api(tenant_id: i64, id: i64) -> () => |()| Change::Any;
    fn create_route(tenant_id: i64, api_id: i64, new: NewRoute)
        -> api_route::Model => |_| Change::Any;
    fn update_route(tenant_id: i64, api_id: i64, id: i64, new: NewRoute)
        -> api_route::Model => |_| Change::Any;
    fn delete_route(tenant_id: i64, api_id: i64, id: i64) -> () => |()| Change::Any;
    fn create_target(tenant_id: i64, api_id: i64, new: NewTarget)
        -> api_target::Model => |_| Change::Any;
    fn update_target(tenant_id: i64, api_id: i64, id: i64, new: NewTarget)
        -> api_target::Model => |_| Change::Any;
    fn delete_target(tenant_id: i64, api_id: i64, id: i64) -> () => |()| Change::Any;
    fn reset_target(tenant_id: i64, api_id: i64, id: i64) -> api_target::Model => |_| Change::Any;
    fn set_api_resilience(tenant_id: i64, id: i64, r: ApiResilience) -> api::Model => |_| Change::Any;
    fn create_api_key(tenant_id: i64, plan_id: i64, name: &str, expires_at: Option<DateTime<Utc>>)
        -> (api_key::Model, ApiKey) => |(key, _)| Change::Keys(vec![key.id]);
    fn update_key(tenant_id: i64, id: i64, name: &str, plan_id: i64, expires_at: Option<DateTime<Utc>>)
        -> api_key::Model => |_| Change::Keys(vec![id]);
    fn revoke_key(tenant_id: i64, key_id: i64) -> () => |()| Change::Keys(vec![key_id]);
    /// The old key and its replacement both change.
    fn rotate_key(tenant_id: i64, id: i64, old_valid_until: DateTime<Utc>)
        -> (api_key::Model, ApiKey) => |(new, _)| Change::Keys(vec![id, new.id]);
    fn create_client(tenant_id: i64, client_id: &str, name: &str, plan_id: i64)
        -> client::Model => |_| Change::Any;
    fn update_client(tenant_id: i64, id: i64, name: &str, plan_id: i64, is_active: bool)
        -> client::Model => |_| Change::Any;
    fn delete_client(tenant_id: i64, id: i64) -> () => |()| Change::Any;
    fn set_tenant_trusted(id: i64, trusted: bool) -> tenant::Model => |_| Change::Any;
    fn set_tenant_active(id: i64, active: bool) -> tenant::Model => |_| Change::Any;
    fn change_tenant(id: i64, change: TenantChange) -> tenant::Model => |_| Change::Any;
    /// The tenant's previous key keeps verifying the tokens it signed until they expire.
    fn rotate_signing_key(secret: &TokenSecret, tenant_id: i64) -> signing_key::Model => |_| Change::Any;
    fn ensure_signing_key(secret: &TokenSecret, tenant_id: i64) -> signing_key::Model => |_| Change::Any;
    fn set_token_lifetime(tenant_id: i64, seconds: i32) -> tenant::Model => |_| Change::Any;
    /// From the next day and month window of the zone before.
    fn set_time_zone(tenant_id: i64, zone: chrono_tz::Tz) -> tenant::Model => |_| Change::Any;
}
