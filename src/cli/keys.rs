//! `tuma keys …`: API keys, from the shell.

use clap::Subcommand;

use crate::api::{create_key, Scope};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it, once; only its hash is stored.
    Create {
        /// The key's name, recorded as the actor of what it does.
        #[arg(long)]
        name: String,
        /// Comma-separated: intents:write, intents:read, approvals:write, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Whose intents the key acts on; defaults to the name. Keys with
        /// the same owner see the same intents and idempotency keys.
        #[arg(long)]
        owner: Option<String>,
    },
}

pub async fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { name, scopes, owner } => {
            let scopes = scopes
                .iter()
                .map(|s| Scope::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!(e))?;
            anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
            let pool = crate::store::connect(&config.database).await?;
            crate::store::migrate(&pool).await?;
            let owner = owner.unwrap_or_else(|| name.clone());
            let key = create_key(&pool, &name, &owner, &scopes).await?;
            eprintln!("API key for {name} (owner {owner}); it is shown only now:");
            println!("{key}");
            Ok(())
        }
    }
}
