//! The soak's engine processes: real `tuma serve` processes of this same
//! binary, sharing the soak's database, each with its own configuration
//! file and log, started, killed with SIGKILL and restarted as the soak
//! decides.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

/// One `tuma serve` process (or the slot for one, while it is down).
pub struct Engine {
    pub name: &'static str,
    /// Its HTTP base URL.
    pub url: String,
    config: PathBuf,
    log: PathBuf,
    database_url: String,
    child: Option<Child>,
    /// Times it was started (the first start included).
    pub starts: u32,
}

impl Engine {
    /// An engine named `name` listening on `port`, configured by
    /// `overlay` (a TOML table merged over the built-in configuration) plus
    /// its own address.
    pub fn new(
        name: &'static str,
        port: u16,
        dir: &Path,
        database_url: &str,
        mut overlay: toml::Table,
    ) -> anyhow::Result<Engine> {
        let listen = format!("127.0.0.1:{port}");
        let mut http = toml::Table::new();
        http.insert("listen".into(), listen.clone().into());
        overlay.insert("http".into(), http.into());
        let config = dir.join(format!("engine-{name}.toml"));
        std::fs::write(&config, toml::to_string(&overlay)?).with_context(|| format!("writing {}", config.display()))?;
        Ok(Engine {
            name,
            url: format!("http://{listen}"),
            config,
            log: dir.join(format!("engine-{name}.log")),
            database_url: database_url.to_owned(),
            child: None,
            starts: 0,
        })
    }

    /// Starts the process (its output appended to its log) and waits until
    /// its `/readyz` answers.
    pub async fn start(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("finding this binary to start engines from it")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = Command::new(exe);
        // The soak's engines run the built-in configuration and its overlay
        // only, whatever this shell's TUMA__ variables say.
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TUMA__")) {
            command.env_remove(key);
        }
        let child = command
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("DATABASE_URL", &self.database_url)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting engine {}", self.name))?;
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!(
                    "engine {} exited at start-up ({status}); see {}",
                    self.name,
                    self.log.display()
                );
            }
            let ready = http
                .get(format!("{}/readyz", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "engine {} not ready after 60 s; see {}",
                self.name,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown, no releasing of leases, requests cut mid-way.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("sending SIGKILL")?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM, as an operator stops a node; SIGKILL after 20 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        if tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Whether it exited without being asked to (a crash).
    pub fn crashed(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!("engine {} exited on its own: {status}", self.name)),
            _ => None,
        }
    }
}

/// `N` different local ports nobody listens on (for the moment): all
/// bound before any is let go, since a port let go may be the next one
/// handed out.
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        *port = listener.local_addr()?.port();
        listeners.push(listener);
    }
    Ok(ports)
}
