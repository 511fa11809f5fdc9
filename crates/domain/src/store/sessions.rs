//! Dashboard sessions: the session cookie carries a random token, the database its SHA-256, so
//! the server can end a session (logout) or all of a user's (a password change).

use chrono::{Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
};

use super::StoreResult;
use crate::apikey::{ApiKey, KeyHash};
use crate::entities::user_session;

/// How long a dashboard session lasts (the cookie's own lifetime is the same).
pub const SESSION_TTL_HOURS: i64 = 12;

/// Starts a session of `user_id`; returns the token for the cookie (shown nowhere else). Ended
/// sessions older than the lifetime are pruned on the way.
pub async fn start_session(db: &impl ConnectionTrait, user_id: i64) -> StoreResult<String> {
    let token = ApiKey::generate_token().expose().to_owned();
    let now = Utc::now();
    user_session::Entity::delete_many()
        .filter(user_session::Column::CreatedAt.lt(now - Duration::hours(SESSION_TTL_HOURS)))
        .exec(db)
        .await?;
    user_session::ActiveModel {
        user_id: Set(user_id),
        token_hash: Set(KeyHash::of(&token).to_hex()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(token)
}

/// The user of a live session token, if any.
pub async fn session_user(db: &impl ConnectionTrait, token: &str) -> StoreResult<Option<i64>> {
    let live_since = Utc::now() - Duration::hours(SESSION_TTL_HOURS);
    Ok(user_session::Entity::find()
        .filter(user_session::Column::TokenHash.eq(KeyHash::of(token).to_hex()))
        .filter(user_session::Column::CreatedAt.gt(live_since))
        .one(db)
        .await?
        .map(|s| s.user_id))
}

/// Ends one session (logout).
pub async fn end_session(db: &impl ConnectionTrait, token: &str) -> StoreResult<()> {
    user_session::Entity::delete_many()
        .filter(user_session::Column::TokenHash.eq(KeyHash::of(token).to_hex()))
        .exec(db)
        .await?;
    Ok(())
}

/// Ends every session of `user_id` but `keep` (a password change keeps the changer's own).
pub async fn end_other_sessions(
    db: &impl ConnectionTrait,
    user_id: i64,
    keep: Option<&str>,
) -> StoreResult<u64> {
    let mut q =
        user_session::Entity::delete_many().filter(user_session::Column::UserId.eq(user_id));
    if let Some(k) = keep {
        q = q.filter(user_session::Column::TokenHash.ne(KeyHash::of(k).to_hex()));
    }
    Ok(q.exec(db).await?.rows_affected)
}

/// Sets a user's password hash and ends every other session of theirs.
pub async fn set_password(
    db: &impl ConnectionTrait,
    user_id: i64,
    hash: &str,
    keep_session: Option<&str>,
) -> StoreResult<()> {
    use crate::entities::user;
    user::Entity::update_many()
        .col_expr(
            user::Column::PasswordHash,
            sea_orm::sea_query::Expr::value(hash.to_owned()),
        )
        .filter(user::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    end_other_sessions(db, user_id, keep_session).await?;
    Ok(())
}
