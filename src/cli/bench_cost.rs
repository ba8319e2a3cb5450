//! What a benchmark's measured part cost: CPU time, by this process (the
//! engine with the benchmark's own clients) and by the PostgreSQL server
//! when it runs on this machine, read from Linux's `/proc`; and the WAL the
//! server wrote, from `pg_stat_wal`. Per payout, these say what a change
//! saved where wall-clock figures on a busy two-core machine cannot; the
//! WAL count moves less with the machine's speed than the CPU does.

use sqlx::PgPool;

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`,
/// which Linux fixes at 100 for every process-visible interface).
const USER_HZ: f64 = 100.0;

/// CPU ticks and WAL counted from when a benchmark's measured part began.
pub(super) struct CostMeter {
    /// The server's postmaster, when the server runs on this machine.
    postmaster: Option<u32>,
    own_start: Option<u64>,
    postgres_start: Option<u64>,
    wal_start: Option<Wal>,
}

/// What was spent since [`CostMeter::start`]; `None` where unreadable.
pub(super) struct Cost {
    /// CPU seconds of this process.
    pub own: Option<f64>,
    /// CPU seconds of the server.
    pub postgres: Option<f64>,
    /// WAL the whole server wrote.
    pub wal: Option<Wal>,
}

/// WAL records and bytes (`pg_stat_wal`, cumulative for the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wal {
    pub records: i64,
    pub bytes: i64,
}

impl CostMeter {
    /// Starts counting. The server's CPU is measured only if `pool` reaches
    /// it over a Unix socket or loopback and its backend is visible here;
    /// its WAL wherever it runs, from PostgreSQL 14 on.
    pub async fn start(pool: &PgPool) -> CostMeter {
        let postmaster = local_postmaster(pool).await;
        let wal_start = wal_written(pool).await;
        CostMeter {
            postmaster,
            own_start: own_ticks(),
            postgres_start: postmaster.and_then(postgres_ticks),
            wal_start,
        }
    }

    pub async fn spent(&self, pool: &PgPool) -> Cost {
        let since = |start: Option<u64>, now: Option<u64>| Some(now?.saturating_sub(start?) as f64 / USER_HZ);
        let own = since(self.own_start, own_ticks());
        let postgres = since(self.postgres_start, self.postmaster.and_then(postgres_ticks));
        let wal = match (self.wal_start, wal_written(pool).await) {
            (Some(start), Some(now)) => Some(Wal {
                records: now.records - start.records,
                bytes: now.bytes - start.bytes,
            }),
            _ => None,
        };
        Cost { own, postgres, wal }
    }
}

/// The server's WAL counters; `None` before PostgreSQL 14 (no
/// `pg_stat_wal`) or when they cannot be read.
async fn wal_written(pool: &PgPool) -> Option<Wal> {
    let (records, bytes) = crate::store::wal_written(pool).await.ok()?;
    Some(Wal { records, bytes })
}

impl Cost {
    /// Two lines for the report. CPU: seconds in all and the time per
    /// `unit` (`n` of them), in milliseconds, or microseconds below a tenth
    /// of one. WAL: records and bytes per `unit`, and in all.
    pub fn lines(&self, n: usize, unit: &str) -> String {
        format!("{}\n{}", self.cpu_line(n, unit), self.wal_line(n, unit))
    }

    fn cpu_line(&self, n: usize, unit: &str) -> String {
        let part = |seconds: Option<f64>, missing: &str| match seconds {
            Some(s) => {
                let each_us = s * 1e6 / n.max(1) as f64;
                if each_us >= 100.0 {
                    format!("{s:.2} s ({:.2} ms a {unit})", each_us / 1000.0)
                } else {
                    format!("{s:.2} s ({each_us:.1} µs a {unit})")
                }
            }
            None => missing.to_owned(),
        };
        format!(
            "CPU: PostgreSQL {}, this process {}",
            part(self.postgres, "not measured (the server is not on this machine)"),
            part(self.own, "not measured (no /proc)")
        )
    }

    fn wal_line(&self, n: usize, unit: &str) -> String {
        let Some(wal) = self.wal else {
            return "WAL: not measured (pg_stat_wal needs PostgreSQL 14 or later)".to_owned();
        };
        let n = n.max(1) as f64;
        format!(
            "WAL: {:.1} records and {} a {unit} ({} records, {} in all, the whole server's)",
            wal.records as f64 / n,
            size(wal.bytes as f64 / n),
            wal.records,
            size(wal.bytes as f64)
        )
    }
}

/// Bytes in B, kB or MB (powers of 1,000), three significant figures or so.
fn size(bytes: f64) -> String {
    if bytes >= 1e6 {
        format!("{:.1} MB", bytes / 1e6)
    } else if bytes >= 1e3 {
        format!("{:.1} kB", bytes / 1e3)
    } else {
        format!("{bytes:.0} B")
    }
}

/// The postmaster of the server `pool` reaches, if it runs here: the
/// parent of this session's backend, named `postgres`.
async fn local_postmaster(pool: &PgPool) -> Option<u32> {
    let (backend, address) = crate::store::server_backend(pool).await.ok()?;
    // No address is a Unix socket; anything but loopback is another host,
    // where the same process id would name some other process.
    if address.is_some_and(|a| a != "127.0.0.1" && a != "::1") {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).ok()?;
    let parent = parse_stat(&stat)?.parent;
    let name = std::fs::read_to_string(format!("/proc/{parent}/comm")).ok()?;
    (name.trim() == "postgres").then_some(parent)
}

fn own_ticks() -> Option<u64> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(stat.own)
}

/// The server's ticks: the postmaster's own and its children's that have
/// exited (reaped), plus every live child's own.
fn postgres_ticks(postmaster: u32) -> Option<u64> {
    let stat = parse_stat(&std::fs::read_to_string(format!("/proc/{postmaster}/stat")).ok()?)?;
    let mut ticks = stat.own + stat.reaped;
    let tasks = std::fs::read_dir(format!("/proc/{postmaster}/task")).ok()?;
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for child in children.split_whitespace() {
            // A child that exits meanwhile is counted by `reaped` next time.
            if let Some(child) = std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
            {
                ticks += child.own;
            }
        }
    }
    Some(ticks)
}

/// The fields of `/proc/<pid>/stat` the meter reads.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    parent: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: children that have exited and been waited for.
    reaped: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (second field) is in
/// parentheses and may hold spaces and parentheses itself, so fields are
/// counted from the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    // After the name: state (3), ppid (4), …, utime (14), stime (15),
    // cutime (16), cstime (17), numbered as in proc(5).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        parent: u32::try_from(field(4)?).ok()?,
        own: field(14)? + field(15)?,
        reaped: field(16)? + field(17)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_from_the_last_parenthesis_whatever_the_name_holds() {
        let line = "4242 (post gres) (x)) S 17 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 75 30 12 20 0 1 0 100 0 0 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                parent: 17,
                own: 325,
                reaped: 42
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 17"), None);
        assert_eq!(parse_stat("no parenthesis at all"), None);
    }

    #[test]
    fn this_process_has_spent_some_cpu_and_the_lines_say_what_was_not_measured_in_fitting_units() {
        assert!(own_ticks().is_some(), "/proc/self/stat is readable on Linux");
        let spent = Cost {
            own: Some(1.5),
            postgres: None,
            wal: None,
        };
        assert_eq!(
            spent.lines(1000, "payout"),
            "CPU: PostgreSQL not measured (the server is not on this machine), \
             this process 1.50 s (1.50 ms a payout)\n\
             WAL: not measured (pg_stat_wal needs PostgreSQL 14 or later)"
        );
        let spent = Cost {
            own: Some(0.44),
            postgres: Some(2.33),
            wal: Some(Wal {
                records: 496_123,
                bytes: 71_456_000,
            }),
        };
        assert_eq!(
            spent.lines(100_000, "job"),
            "CPU: PostgreSQL 2.33 s (23.3 µs a job), this process 0.44 s (4.4 µs a job)\n\
             WAL: 5.0 records and 715 B a job (496123 records, 71.5 MB in all, the whole server's)"
        );
        assert!(spent
            .lines(5000, "payout")
            .ends_with("WAL: 99.2 records and 14.3 kB a payout (496123 records, 71.5 MB in all, the whole server's)"));
    }
}
