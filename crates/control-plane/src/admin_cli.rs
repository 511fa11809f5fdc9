//! `control-plane create-admin` and `reset-password`: account chores from the command line.

use domain::entities::user;
use domain::password;
use domain::sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};
use domain::settings::Settings;
use domain::store;
use rand::RngCore;

use crate::accounts::{email_problem, username_problem};

#[derive(Debug, clap::Args)]
pub struct CreateAdmin {
    #[arg(long)]
    pub username: String,
    #[arg(long, default_value = "admin@localhost.localdomain")]
    pub email: String,
    /// The password; random (and printed) when unset.
    #[arg(long, env = "GATEWAY_ADMIN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// Creates the admin, or promotes an existing user of that name. Prints the outcome.
pub async fn run(settings: &Settings, args: CreateAdmin) -> anyhow::Result<()> {
    let username = args.username.trim().to_lowercase();
    if let Some(p) = username_problem(&username) {
        anyhow::bail!("{p}");
    }
    if let Some(p) = email_problem(&args.email) {
        anyhow::bail!("{p}");
    }
    let db = domain::db::connect_and_migrate(&settings.database_url).await?;
    if let Some(existing) = store::find_user_by_username(&db, &username).await? {
        let mut m: user::ActiveModel = existing.into_active_model();
        m.is_admin = Set(true);
        m.update(&db).await?;
        println!("'{username}' is now a platform admin (password unchanged).");
        return Ok(());
    }
    let generated = args.password.is_none();
    let pw = args.password.unwrap_or_else(random_password);
    if let Some(weak) = password::weakness(&pw, &username) {
        anyhow::bail!("{weak}");
    }
    let hash = password::hash_password(&pw)?;
    store::create_user(&db, &username, &args.email, &hash, true).await?;
    if generated {
        println!("Created platform admin '{username}' with password: {pw}");
    } else {
        println!("Created platform admin '{username}'.");
    }
    Ok(())
}

/// 96 random bits in hex: what a generated password is.
fn random_password() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[derive(Debug, clap::Args)]
pub struct ResetPassword {
    #[arg(long)]
    pub username: String,
    /// The new password; random (and printed) when unset.
    #[arg(long, env = "GATEWAY_NEW_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// Sets a user's password (a random one, printed, unless given) and ends all their sessions: the
/// way back in when a password (the demo's, say) is lost.
pub async fn reset_password(settings: &Settings, args: ResetPassword) -> anyhow::Result<()> {
    let username = args.username.trim().to_lowercase();
    let db = domain::db::connect_and_migrate(&settings.database_url).await?;
    let Some(user) = store::find_user_by_username(&db, &username).await? else {
        anyhow::bail!("there is no user '{username}'");
    };
    let generated = args.password.is_none();
    let pw = args.password.unwrap_or_else(random_password);
    if let Some(weak) = password::weakness(&pw, &username) {
        anyhow::bail!("{weak}");
    }
    let hash = password::hash_password(&pw)?;
    store::set_password(&db, user.id, &hash, None).await?;
    if generated {
        println!("New password of '{username}': {pw} (every session of theirs has ended)");
    } else {
        println!("Password of '{username}' changed; every session of theirs has ended.");
    }
    Ok(())
}
