//! Dashboard sessions the server can end (logout, a password change), and which key replaced a
//! rotated one.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, string_len_uniq, timestamp_with_time_zone,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UserSessions {
    Table,
    Id,
    UserId,
    TokenHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    ReplacedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(UserSessions::Table)
                    .col(big_pk_auto(UserSessions::Id))
                    .col(big_integer(UserSessions::UserId))
                    .col(string_len_uniq(UserSessions::TokenHash, 64))
                    .col(timestamp_with_time_zone(UserSessions::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(UserSessions::Table, UserSessions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_user_sessions_user")
                    .table(UserSessions::Table)
                    .col(UserSessions::UserId)
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(big_integer_null(ApiKeys::ReplacedBy))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .drop_column(ApiKeys::ReplacedBy)
                    .take(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(UserSessions::Table).take())
            .await
    }
}
