//! Where the demo's database comes from: a fresh database on the
//! configured server, or, when no server answers and PostgreSQL's tools are
//! installed, a throwaway cluster in a temporary directory. Both are
//! removed when the demo ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// A database the demo owns until [`DemoDatabase::remove`].
pub struct DemoDatabase {
    pub url: String,
    options: PgConnectOptions,
    name: String,
    cluster: Option<Cluster>,
}

struct Cluster {
    pg_ctl: PathBuf,
    dir: PathBuf,
}

impl DemoDatabase {
    /// A fresh database named after `configured_url`'s and `purpose`, on
    /// its server if it answers, else on a throwaway cluster.
    pub async fn provision(configured_url: &str, purpose: &str) -> anyhow::Result<DemoDatabase> {
        let options = PgConnectOptions::from_str(configured_url).context("database.url is not a Postgres URL")?;
        let base = options.get_database().unwrap_or("tuma").to_owned();
        let name = format!("{base}_{purpose}_{}", std::process::id());
        if reachable(&options).await {
            return Ok(DemoDatabase {
                url: options.clone().database(&name).to_url_lossy().to_string(),
                options,
                name,
                cluster: None,
            });
        }
        let (cluster, port) = start_cluster().map_err(|why| {
            anyhow::anyhow!(
                "no PostgreSQL answers at {} and no throwaway cluster could be started ({why}). \
                 Start PostgreSQL (e.g. `sudo apt install postgresql` or \
                 `docker run -e POSTGRES_HOST_AUTH_METHOD=trust -p 5432:5432 postgres:15`) \
                 or point DATABASE_URL at one",
                crate::store::redact(configured_url)
            )
        })?;
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
            .database("postgres");
        for _ in 0..50 {
            if reachable(&options).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(DemoDatabase {
            url: options.clone().database(&name).to_url_lossy().to_string(),
            options,
            name,
            cluster: Some(cluster),
        })
    }

    /// Where it runs, for the report.
    pub fn describe(&self) -> String {
        match &self.cluster {
            Some(cluster) => format!("throwaway cluster in {}", cluster.dir.display()),
            None => format!("database {} (dropped at the end)", self.name),
        }
    }

    /// Drops the database, or stops and deletes the cluster.
    pub async fn remove(self) {
        if let Err(error) = crate::store::drop_database(&self.options, &self.name).await {
            tracing::warn!(%error, "could not drop the demo database");
        }
        if let Some(cluster) = self.cluster {
            let _ = Command::new(&cluster.pg_ctl)
                .arg("-D")
                .arg(&cluster.dir)
                .args(["-m", "immediate", "stop"])
                .output();
            let _ = std::fs::remove_dir_all(&cluster.dir);
        }
    }
}

async fn reachable(options: &PgConnectOptions) -> bool {
    let admin = options.clone().database("postgres");
    matches!(
        tokio::time::timeout(Duration::from_secs(3), PgConnection::connect_with(&admin)).await,
        Ok(Ok(_))
    )
}

/// `initdb` and `pg_ctl`, from PATH or Debian's versioned directories.
fn find_tool(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin").join(name)).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    on_path.into_iter().chain(debian).find(|p| p.is_file())
}

fn start_cluster() -> Result<(Cluster, u16), String> {
    let initdb = find_tool("initdb").ok_or("initdb is not installed")?;
    let pg_ctl = find_tool("pg_ctl").ok_or("pg_ctl is not installed")?;
    #[cfg(unix)]
    if is_root() {
        return Err("PostgreSQL refuses to run a cluster as root".into());
    }
    let dir = std::env::temp_dir().join(format!("tuma-demo-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    run(Command::new(&initdb)
        .arg("-D")
        .arg(&dir)
        .args(["-U", "postgres", "-A", "trust", "--no-sync"]))?;
    run(Command::new(&pg_ctl)
        .arg("-D")
        .arg(&dir)
        .arg("-l")
        .arg(dir.join("log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            socket_dir(&dir)
        ))
        .args(["-w", "start"]))?;
    Ok((Cluster { pg_ctl, dir }, port))
}

fn socket_dir(dir: &Path) -> String {
    dir.display().to_string()
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(unix)]
fn is_root() -> bool {
    // The effective user id, without a libc dependency: /proc's view.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
