//! Database connection and migrations, the same for SQLite and PostgreSQL.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a query waits for a connection: while the database is down, how long a request waits
/// before it is told so (the pool retries connecting meanwhile).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `e` says the database cannot be reached (down, restarting, the connection lost) rather
/// than that it refused a query: what is answered 503, and retried later, not 500.
pub fn is_unavailable(e: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx};
    match e {
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Conn(r) | DbErr::Exec(r) | DbErr::Query(r) => match r {
            RuntimeErr::SqlxError(e) => match &**e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_) => true,
                // Class 08 (connection exception) and 57P01-57P03 (shutting down, cannot
                // connect now).
                sqlx::Error::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            },
            RuntimeErr::Internal(m) => m.contains("connection") && m.contains("closed"),
        },
        _ => false,
    }
}

/// Connects without migrating.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .sqlx_logging(false)
        // Both planes may open one SQLite file: WAL lets readers and a writer work together,
        // and the busy timeout queues writers instead of failing them.
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                // A second of a busy data plane's request log (tens of thousands of rows and
                // their index entries) is written in one transaction: with SQLite's default 2 MB
                // page cache its dirty pages spill to the WAL and are read back mid-transaction,
                // and each multi-row INSERT's statement journal goes through a temporary file.
                // 32 MB per connection (4 at most) and an in-memory statement journal avoid both.
                .pragma("cache_size", "-32768")
                .pragma("temp_store", "memory")
        });
    if url.starts_with("sqlite:") {
        // One writer at a time anyway; a small pool avoids lock convoys.
        opts.max_connections(4);
    }
    Database::connect(opts).await
}

/// Connects to a database that must already exist, never creating it: what the data plane does
/// (the control plane owns the schema). A SQLite URL's `mode=rwc` is opened as `mode=rw`, so a
/// missing file is an error naming it instead of a new empty database.
pub async fn connect_existing(url: &str) -> Result<DatabaseConnection, DbErr> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return connect(url).await;
    };
    let url = if url.contains("mode=rwc") {
        url.replacen("mode=rwc", "mode=rw", 1)
    } else {
        url.to_owned()
    };
    let file = rest.trim_start_matches("//");
    let file = file.split('?').next().unwrap_or(file);
    if !file.is_empty() && !file.starts_with(":memory:") && !std::path::Path::new(file).exists() {
        return Err(DbErr::Custom(format!(
            "the database file {file} does not exist: start the control plane on it (or run \
             `control-plane migrate`) first, the data plane never creates one"
        )));
    }
    connect(&url).await
}

/// Whether every migration this build knows has been applied (`seaql_migrations` read directly:
/// asking the migrator would create its table). A database ahead of this build is ready too.
pub async fn schema_ready(db: &DatabaseConnection) -> bool {
    use sea_orm::{ConnectionTrait, Statement};
    let stmt = Statement::from_string(
        db.get_database_backend(),
        "SELECT version FROM seaql_migrations",
    );
    let Ok(rows) = db.query_all_raw(stmt).await else {
        return false;
    };
    let applied: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get_by_index::<String>(0).ok())
        .collect();
    Migrator::migrations()
        .iter()
        .all(|m| applied.iter().any(|a| a == m.name()))
}

/// Connects and applies every pending migration: what the control plane does at start-up.
pub async fn connect_and_migrate(url: &str) -> Result<DatabaseConnection, DbErr> {
    let db = connect(url).await?;
    Migrator::up(&db, None).await?;
    // The pool's connections may have cached statements (and their column lists) from before
    // the schema changed; sqlx does not notice (sqlx#2517: a column added by a migration then
    // reads as missing). Fresh connections see the migrated schema.
    db.close().await?;
    connect(url).await
}

#[cfg(test)]
mod tests {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, Statement};

    use crate::testing::{Backend, TestDb};

    const TABLES: &[&str] = &[
        "users",
        "tenants",
        "plans",
        "apis",
        "api_keys",
        "clients",
        "usage_rollups",
        "usage_minutes",
        "api_tokens",
        "api_targets",
        "target_health",
        "config_version",
    ];

    async fn table_names(t: &TestDb) -> Vec<String> {
        let sql = match t.backend {
            Backend::Sqlite => {
                "SELECT name AS n FROM sqlite_master WHERE type = 'table' ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT table_name::text AS n FROM information_schema.tables \
                 WHERE table_schema = 'public' ORDER BY table_name"
            }
        };
        let rows =
            t.db.query_all_raw(Statement::from_string(t.db.get_database_backend(), sql))
                .await
                .unwrap();
        rows.iter()
            .map(|r| r.try_get::<String>("", "n").unwrap())
            .collect()
    }

    async fn migrations_go_up_down_and_up_again(t: TestDb) {
        Migrator::up(&t.db, None).await.unwrap();
        let names = table_names(&t).await;
        for table in TABLES {
            assert!(
                names.iter().any(|n| n == table),
                "{:?}: {table} missing in {names:?}",
                t.backend
            );
        }
        assert!(
            Migrator::get_pending_migrations(&t.db)
                .await
                .unwrap()
                .is_empty()
        );

        Migrator::down(&t.db, None).await.unwrap();
        let names = table_names(&t).await;
        for table in TABLES {
            assert!(
                !names.iter().any(|n| n == table),
                "{:?}: {table} left after down",
                t.backend
            );
        }

        Migrator::up(&t.db, None).await.unwrap();
        assert_eq!(crate::store::config_version(&t.db).await.unwrap(), 0);
        // Running up on an up-to-date database changes nothing.
        Migrator::up(&t.db, None).await.unwrap();
        assert_eq!(
            table_names(&t)
                .await
                .iter()
                .filter(|n| TABLES.contains(&n.as_str()))
                .count(),
            TABLES.len()
        );
    }

    #[tokio::test]
    async fn migrations_up_and_down_on_sqlite() {
        migrations_go_up_down_and_up_again(TestDb::sqlite_empty().await).await;
    }

    #[tokio::test]
    async fn migrations_up_and_down_on_postgres() {
        let Some(url) = crate::testing::required_env("TEST_DATABASE_URL") else {
            return;
        };
        migrations_go_up_down_and_up_again(TestDb::postgres_from(&url, false).await).await;
    }
}
