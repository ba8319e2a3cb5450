//! `tuma mpesa …`: one-off Daraja operations.

use clap::Subcommand;

use crate::config::Config;
use crate::providers::mpesa::{c2b_token, callback_url, MpesaClient};

#[derive(Debug, Subcommand)]
pub enum MpesaCommand {
    /// Register this engine's C2B confirmation and validation URLs for
    /// mpesa.c2b_shortcode. Daraja accepts a production registration once;
    /// changing it later goes through Safaricom's portal.
    RegisterC2b,
}

pub async fn run(config: Config, command: MpesaCommand) -> anyhow::Result<()> {
    let mpesa = config
        .mpesa
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no [mpesa] section is configured"))?;
    match command {
        MpesaCommand::RegisterC2b => {
            let client = MpesaClient::new(mpesa.clone())?;
            let token = c2b_token(&mpesa);
            let answer = client
                .register_c2b_urls(
                    &callback_url(&mpesa, "c2b-confirmation", &token),
                    &callback_url(&mpesa, "c2b-validation", &token),
                )
                .await?;
            println!("C2B URLs for shortcode {}: {answer}", mpesa.c2b_shortcode);
            Ok(())
        }
    }
}
