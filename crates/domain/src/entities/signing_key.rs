//! The `signing_keys` table: each tenant's Ed25519 keys that sign its tokens (`crate::jwt`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    /// The JOSE `kid`: unique across tenants.
    #[sea_orm(unique)]
    pub kid: String,
    /// The public key, base64url (the JWK's `x`).
    pub public_x: String,
    /// The PKCS#8 private key sealed by `jwt::TokenSecret` (never stored in the clear).
    pub sealed_private: String,
    pub created_at: DateTimeUtc,
    /// When a newer key replaced it (`None`: the tenant's current key).
    pub retired_at: Option<DateTimeUtc>,
    /// Until when a retired key still verifies the tokens it signed.
    pub verify_until: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
