//! A private Postgres cluster, provisioned from the Postgres binaries
//! installed on the machine, for `chorus serve` without `DATABASE_URL` and for
//! the test suite.
//!
//! Postgres refuses to run as root. When Chorus runs as root, the cluster runs
//! as the system `postgres` user (through `runuser`) in a directory that user
//! owns; otherwise it runs as the current user.
//!
//! Layout of the data directory:
//! - `pgdata/`: the cluster itself;
//! - `password`: the generated password of the `chorus` superuser (mode 0600);
//! - `postgres.log`: the server's log;
//! - `cluster.lock`: taken while starting, so concurrent starts (parallel test
//!   processes) share one cluster.

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rand::Rng;
use tokio::process::Command;

/// The superuser of a private cluster.
pub const SUPERUSER: &str = "chorus";

/// What the cluster is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterProfile {
    /// A server's data: Postgres' durable defaults.
    Durable,
    /// Tests: no fsync, many connections. Data may be lost on a machine crash.
    Ephemeral,
}

/// Where and how to run a private cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub data_dir: PathBuf,
    pub profile: ClusterProfile,
}

/// Why a private cluster could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no PostgreSQL server binaries found (initdb and pg_ctl on PATH or under \
         /usr/lib/postgresql/*/bin). Install them (Debian: `apt-get install postgresql`) \
         or set DATABASE_URL to an existing database"
    )]
    BinariesNotFound,
    #[error(
        "Chorus runs as root and PostgreSQL refuses to run as root, so the private cluster \
         must run as the `postgres` system user, which does not exist here. Install Debian's \
         `postgresql` package (it creates the user), run Chorus as another user, or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error(
        "the `postgres` user cannot write to {0}: a parent directory is closed to it. \
         Set CHORUS_DATA_DIR to a directory it can reach (for example /var/lib/chorus), or set DATABASE_URL"
    )]
    Unreachable(PathBuf),
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// A running private cluster.
#[derive(Debug)]
pub struct PrivateCluster {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<SystemUser>,
    port: u16,
    password: String,
}

#[derive(Clone, Debug)]
struct SystemUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl PrivateCluster {
    /// Initialises the cluster if needed and starts it if it is not running.
    /// A cluster already running in `data_dir` (left behind by a crash, or
    /// started by a parallel test process) is adopted.
    pub async fn start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let mut cluster = Self::in_dir(&options.data_dir).await?;

        let lock_path = cluster.data_dir.join("cluster.lock");
        let lock = tokio::task::spawn_blocking(move || -> io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(lock_path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| ClusterError::Io {
            context: "locking the data directory".into(),
            source: io::Error::other(e),
        })?
        .map_err(io_error("locking the data directory"))?;

        if !cluster.pgdata().join("PG_VERSION").exists() {
            cluster.init(options.profile).await?;
        }
        cluster.password = tokio::fs::read_to_string(cluster.password_path())
            .await
            .map_err(io_error("reading the cluster password"))?
            .trim()
            .to_owned();
        cluster.port = match cluster.running_port().await? {
            Some(port) => port,
            None => cluster.launch().await?,
        };
        drop(lock);
        Ok(cluster)
    }

    /// A cluster (not yet running) in `data_dir`, which is created if need
    /// be and given to the user the cluster runs as.
    async fn in_dir(data_dir: &Path) -> Result<Self, ClusterError> {
        let bin_dir = find_binaries().ok_or(ClusterError::BinariesNotFound)?;
        let run_as = if current_uid()? == 0 {
            Some(postgres_user()?.ok_or(ClusterError::NoPostgresUser)?)
        } else {
            None
        };
        let data_dir = absolute(data_dir)?;
        tokio::fs::create_dir_all(&data_dir)
            .await
            .map_err(io_error(format!("creating {}", data_dir.display())))?;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(format!("restricting {}", data_dir.display())))?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&data_dir, Some(user.uid), Some(user.gid)).map_err(
                io_error(format!("giving {} to {}", data_dir.display(), user.name)),
            )?;
        }
        let cluster = Self {
            data_dir,
            bin_dir,
            run_as,
            port: 0,
            password: String::new(),
        };
        if cluster.run_as.is_some() {
            let probe = cluster
                .command("test", &["-w", &cluster.data_dir.display().to_string()])
                .status()
                .await
                .map_err(io_error("running runuser"))?;
            if !probe.success() {
                return Err(ClusterError::Unreachable(cluster.data_dir));
            }
        }
        Ok(cluster)
    }

    /// Starts a streaming standby of this running cluster in `data_dir`
    /// (which must not hold a cluster yet): a base backup taken with
    /// `pg_basebackup -R`, which leaves the standby following this cluster,
    /// started on a port of its own on 127.0.0.1. It answers read-only
    /// queries (hot standby) and has the same superuser and password.
    ///
    /// This cluster must allow replication connections from 127.0.0.1, as
    /// private clusters do: `initdb`'s `pg_hba.conf` admits them, and
    /// Postgres' defaults (`wal_level = replica`, `max_wal_senders = 10`)
    /// are left alone.
    pub async fn start_standby(&self, data_dir: &Path) -> Result<Self, ClusterError> {
        let mut standby = Self::in_dir(data_dir).await?;
        if standby.pgdata().exists() {
            return Err(ClusterError::Io {
                context: format!("making a standby in {}", standby.data_dir.display()),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the directory already holds a cluster",
                ),
            });
        }
        let pgdata = standby.pgdata().display().to_string();
        let port = self.port.to_string();
        // The password goes through the environment, never the command line;
        // `-R` writes it into the standby's `postgresql.auto.conf` (mode
        // 0600, in a directory only the cluster's user can open).
        let output = standby
            .command(
                &standby.bin("pg_basebackup"),
                &[
                    "-D",
                    &pgdata,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    SUPERUSER,
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "-w",
                ],
            )
            .env("PGPASSWORD", &self.password)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(io_error("running pg_basebackup"))?;
        if !output.status.success() {
            return Err(ClusterError::Command {
                command: "pg_basebackup".into(),
                status: output.status.to_string(),
                output: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        standby.password.clone_from(&self.password);
        standby.write_private(&standby.password_path(), &standby.password)?;
        standby.port = standby.launch().await?;
        Ok(standby)
    }

    /// The port the cluster listens on (on 127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Stops the cluster (fast shutdown: open sessions are ended).
    pub async fn stop(&self) -> Result<(), ClusterError> {
        let pgdata = self.pgdata().display().to_string();
        self.run(
            &self.bin("pg_ctl"),
            &["stop", "-D", &pgdata, "-m", "fast", "-w", "-t", "60"],
        )
        .await
        .map(drop)
    }

    /// Stops the cluster in `data_dir` if one is running there.
    pub async fn stop_in(data_dir: &Path) -> Result<bool, ClusterError> {
        let bin_dir = find_binaries().ok_or(ClusterError::BinariesNotFound)?;
        let run_as = if current_uid()? == 0 {
            postgres_user()?
        } else {
            None
        };
        let cluster = Self {
            data_dir: absolute(data_dir)?,
            bin_dir,
            run_as,
            port: 0,
            password: String::new(),
        };
        if cluster.running_port().await?.is_none() {
            return Ok(false);
        }
        cluster.stop().await?;
        Ok(true)
    }

    fn pgdata(&self) -> PathBuf {
        self.data_dir.join("pgdata")
    }

    fn password_path(&self) -> PathBuf {
        self.data_dir.join("password")
    }

    fn bin(&self, name: &str) -> String {
        self.bin_dir.join(name).display().to_string()
    }

    async fn init(&self, profile: ClusterProfile) -> Result<(), ClusterError> {
        let pgdata = self.pgdata();
        // A previous initdb may have died halfway.
        if pgdata.exists() {
            tokio::fs::remove_dir_all(&pgdata)
                .await
                .map_err(io_error("removing a half-initialised cluster"))?;
        }
        let password: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let pwfile = self.data_dir.join("initdb-password");
        self.write_private(&pwfile, &password)?;
        let result = self
            .run(
                &self.bin("initdb"),
                &[
                    "-D",
                    &pgdata.display().to_string(),
                    "-U",
                    SUPERUSER,
                    &format!("--pwfile={}", pwfile.display()),
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
            )
            .await;
        let _ = std::fs::remove_file(&pwfile);
        result?;

        let mut conf = String::from(
            "\n# Written by Chorus for its private cluster.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = ''\n\
             max_connections = 200\n",
        );
        if profile == ClusterProfile::Ephemeral {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
            conf.push_str("max_connections = 400\n");
        }
        let conf_path = pgdata.join("postgresql.conf");
        let mut existing =
            std::fs::read_to_string(&conf_path).map_err(io_error("reading postgresql.conf"))?;
        let _ = write!(existing, "{conf}");
        std::fs::write(&conf_path, existing).map_err(io_error("writing postgresql.conf"))?;
        // Written last: its presence means the cluster is complete.
        self.write_private(&self.password_path(), &password)
    }

    /// Writes a file only its owner (the cluster's user) can read.
    fn write_private(&self, path: &Path, contents: &str) -> Result<(), ClusterError> {
        let context = || format!("writing {}", path.display());
        std::fs::write(path, contents).map_err(io_error(context()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error(context()))?;
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(io_error(context()))?;
        }
        Ok(())
    }

    /// The port of the postmaster running in our data directory, if any.
    async fn running_port(&self) -> Result<Option<u16>, ClusterError> {
        let pgdata = self.pgdata().display().to_string();
        let status = self
            .command(&self.bin("pg_ctl"), &["status", "-D", &pgdata])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(io_error("running pg_ctl status"))?;
        if !status.success() {
            return Ok(None);
        }
        // The fourth line of postmaster.pid is the port.
        let pid_file = tokio::fs::read_to_string(self.pgdata().join("postmaster.pid"))
            .await
            .map_err(io_error("reading postmaster.pid"))?;
        Ok(pid_file.lines().nth(3).and_then(|l| l.trim().parse().ok()))
    }

    async fn launch(&self) -> Result<u16, ClusterError> {
        let pgdata = self.pgdata().display().to_string();
        let log = self.data_dir.join("postgres.log").display().to_string();
        let mut last_error = None;
        // The free port we pick can be taken before the postmaster binds it.
        for _ in 0..3 {
            let port = free_port()?;
            let result = self
                .run(
                    &self.bin("pg_ctl"),
                    &[
                        "start",
                        "-D",
                        &pgdata,
                        "-l",
                        &log,
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        &format!("-p {port}"),
                    ],
                )
                .await;
            match result {
                Ok(_) => return Ok(port),
                Err(ClusterError::Command {
                    command,
                    status,
                    output,
                }) => {
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = tail.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    last_error = Some(ClusterError::Command {
                        command,
                        status,
                        output: format!("{output}\n--- {log} ---\n{}", tail.join("\n")),
                    });
                }
                Err(other) => return Err(other),
            }
        }
        Err(last_error.unwrap_or(ClusterError::BinariesNotFound))
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &user.name, "--", program]);
                c
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .current_dir(&self.data_dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            // Keep the postmaster out of our process group, so a Ctrl-C in the
            // terminal reaches Chorus, which then shuts the cluster down in order.
            .process_group(0);
        command
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<String, ClusterError> {
        let output = self
            .command(program, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(io_error(format!("running {program}")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(ClusterError::Command {
                command: format!("{program} {}", args.first().copied().unwrap_or_default()),
                status: output.status.to_string(),
                output: text,
            })
        }
    }
}

/// The directory holding `initdb` and `pg_ctl`: from PATH, else the newest
/// version under `/usr/lib/postgresql`.
fn find_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // Debian links them from elsewhere; use the real directory so
                // pg_ctl and postgres come from the same installation.
                let real = std::fs::canonicalize(&initdb).ok()?;
                let real_dir = real.parent()?.to_path_buf();
                if has_both(&real_dir) {
                    return Some(real_dir);
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn current_uid() -> Result<u32, ClusterError> {
    // /proc/self belongs to the effective user of this process.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(io_error("reading /proc/self"))
}

fn postgres_user() -> Result<Option<SystemUser>, ClusterError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io_error("reading /etc/passwd"))?;
    Ok(passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres") && fields.len() > 3).then(|| SystemUser {
            name: "postgres".into(),
            uid: fields[2].parse().unwrap_or(u32::MAX),
            gid: fields[3].parse().unwrap_or(u32::MAX),
        })
    }))
}

fn absolute(path: &Path) -> Result<PathBuf, ClusterError> {
    std::path::absolute(path).map_err(io_error(format!("resolving {}", path.display())))
}

fn free_port() -> Result<u16, ClusterError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_error("finding a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io_error("finding a free port"))
}
