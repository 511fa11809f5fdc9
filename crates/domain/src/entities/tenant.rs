//! The `tenants` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    #[sea_orm(unique)]
    pub slug: String,
    pub owner_id: i64,
    pub is_active: bool,
    /// A platform admin lets this tenant use loopback and private upstreams.
    pub trusted_upstreams: bool,
    /// How long a token minted from one of its keys lives, in seconds.
    pub token_lifetime_s: i32,
    /// A platform admin's ceiling over all of its traffic (all `None`: none), see
    /// [`crate::plan::TenantLimits`].
    pub limit_rpm: Option<i64>,
    pub limit_burst: Option<i64>,
    pub limit_day: Option<i64>,
    pub limit_month: Option<i64>,
    /// The IANA zone its day and month windows are in (see [`crate::calendar`]).
    pub time_zone: String,
    /// The zone before the last change, and when it was made.
    pub time_zone_before: Option<String>,
    pub time_zone_changed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Where its day and month windows begin and end (an unknown stored zone reads as UTC).
    pub fn calendar(&self) -> crate::calendar::Calendar {
        crate::calendar::Calendar::of_columns(
            &self.time_zone,
            self.time_zone_before.as_deref(),
            self.time_zone_changed_at,
        )
    }
}
