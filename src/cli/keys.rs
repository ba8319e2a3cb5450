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
        /// Comma-separated: intents:write, intents:read, approvals:write, parties:write, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Whose intents the key acts on; defaults to the name. Keys with
        /// the same owner see the same intents and idempotency keys.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Keys as JSON lines, live ones first, newest first: name, owner,
    /// prefix, scopes, created_at, revoked_at. Never a key or its hash.
    List {
        /// Most keys listed.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Revoke a key: it authenticates nothing from the next request on, on
    /// every node. Give its prefix (8 hex digits, as `keys list` shows it)
    /// or the whole key, e.g. one found leaked. Recorded in the console's
    /// audit log.
    Revoke {
        /// The key's prefix, or the whole key.
        key: String,
    },
}

/// The prefix of `given`: the 8 hex digits a key starts with after
/// `tuma_`, or `given` itself when it is such a prefix.
fn prefix_of(given: &str) -> Option<&str> {
    let given = given.trim();
    let prefix = match given.strip_prefix(crate::api::KEY_PREFIX) {
        Some(rest) => rest.split_once('_').map_or(rest, |(prefix, _)| prefix),
        None => given,
    };
    (prefix.len() == 8 && prefix.bytes().all(|b| b.is_ascii_hexdigit())).then_some(prefix)
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
            let pool = crate::store::open(&config.database).await?;
            let owner = owner.unwrap_or_else(|| name.clone());
            let key = create_key(&pool, &name, &owner, &scopes).await?;
            eprintln!("API key for {name} (owner {owner}); it is shown only now:");
            println!("{key}");
            Ok(())
        }
        KeysCommand::List { limit } => {
            anyhow::ensure!(limit > 0, "--limit must be positive");
            let pool = crate::store::open(&config.database).await?;
            for key in crate::store::keys::list(&pool, limit).await? {
                let line = serde_json::json!({
                    "name": key.name,
                    "owner": key.owner,
                    "prefix": key.prefix,
                    "scopes": key.scopes,
                    "created_at": key.created_at,
                    "revoked_at": key.revoked_at,
                });
                println!("{line}");
            }
            Ok(())
        }
        KeysCommand::Revoke { key } => {
            let prefix = prefix_of(&key)
                .ok_or_else(|| {
                    anyhow::anyhow!("give a key's prefix (8 hex digits, see `tuma keys list`) or the whole key")
                })?
                .to_owned();
            let pool = crate::store::open(&config.database).await?;
            let revoked = crate::store::keys::revoke(&pool, &prefix, None).await?;
            let actor = format!("shell:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
            let audit = crate::store::console::NewAudit {
                actor: &actor,
                role: None,
                action: "revoke_key",
                target: Some(&prefix),
                outcome: if revoked.is_some() { "ok" } else { "not_found" },
                detail: revoked.as_deref(),
                remote_addr: None,
            };
            crate::store::console::insert_audit(&pool, &audit, None).await?;
            let name = revoked.ok_or_else(|| anyhow::anyhow!("no live key with prefix {prefix}"))?;
            println!("key {prefix} ({name}) revoked; it authenticates nothing from now on");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_of;

    #[test]
    fn a_key_or_its_prefix_gives_the_prefix_and_anything_else_nothing() {
        assert_eq!(prefix_of("0a1b2c3d"), Some("0a1b2c3d"));
        assert_eq!(prefix_of(" tuma_0a1b2c3d_00ff00ff00ff\n"), Some("0a1b2c3d"));
        assert_eq!(prefix_of("tuma_0a1b2c3d"), Some("0a1b2c3d"));
        assert_eq!(prefix_of("0a1b2c3"), None);
        assert_eq!(prefix_of("tuma_0a1b2c3g_00"), None);
        assert_eq!(prefix_of("shop"), None);
        assert_eq!(prefix_of(""), None);
    }
}
