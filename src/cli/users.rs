//! `tuma users …`: admin console users, from the shell. The first admin is
//! made here; admins add the others in the console. Listing and disabling
//! work here too, for when no admin can sign in.

use std::io::{BufRead, IsTerminal, Write};

use clap::Subcommand;

use crate::config::Config;
use crate::console::{create_user, Role};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a console user. The password is read from standard input (one
    /// line), or asked for without echo on a terminal; it is never taken
    /// from the command line, where other users and shell history see it.
    Create {
        /// The user name, recorded as the actor of what they do.
        #[arg(long)]
        username: String,
        /// viewer, approver, operator or admin.
        #[arg(long)]
        role: String,
    },
    /// List console users, as JSON lines.
    List,
    /// Disable a console user and end their sessions at once.
    Disable {
        #[arg(long)]
        username: String,
    },
}

/// Most users `users list` prints.
const MAX_LISTED: i64 = 10_000;

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub async fn run(config: Config, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create { username, role } => {
            let role = Role::parse(&role).map_err(|e| anyhow::anyhow!(e))?;
            let password = read_password()?;
            let pool = crate::store::open(&config.database).await?;
            create_user(&pool, &username, role, &password, None).await?;
            let _ = std::io::stderr().flush();
            println!("console user {username} created with role {}", role.as_str());
            Ok(())
        }
        UsersCommand::List => {
            let pool = crate::store::open(&config.database).await?;
            for user in crate::store::console::users(&pool, MAX_LISTED).await? {
                let line = serde_json::json!({
                    "username": user.username,
                    "role": user.role,
                    "created_at": user.created_at,
                    "disabled_at": user.disabled_at,
                });
                println!("{line}");
            }
            Ok(())
        }
        UsersCommand::Disable { username } => {
            let pool = crate::store::open(&config.database).await?;
            anyhow::ensure!(
                crate::store::console::disable_user(&pool, &username, None).await?,
                "no active console user {username}"
            );
            println!("console user {username} disabled; their sessions have ended");
            Ok(())
        }
    }
}
