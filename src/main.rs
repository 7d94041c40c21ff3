//! The `corekv` command line: the server (`serve`) and the tools around it.
//! Only argument parsing and wiring live here; everything else is in the
//! crates (engine, net, cluster, bench).

mod tune;

use std::path::PathBuf;

use std::time::Duration;

mod ops;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use corekv_cluster::{NodeConfig, StopHandle};
use corekv_net::client::Client;
use corekv_net::native::{Consistency, RequestBody, ResponseBody};

/// mimalloc: the request path allocates small short-lived buffers per
/// request; glibc malloc spent ~20 % of a shard's CPU on them under load.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// mimalloc through its plain `mi_malloc` whenever the alignment allows.
///
/// The `mimalloc` crate (0.1.52) sends every request to `mi_malloc_aligned`,
/// even for alignment 1. mimalloc v3's aligned path only has a fast path
/// for blocks up to 1 KiB whose size class has a free block ready; anything
/// else (a larger block, or a page whose free list must first be refilled
/// from the blocks freed since) falls to an over-allocating fallback
/// (~400 instructions) — and because only the plain path refills a page's
/// free list, a size class that ran dry stayed on the fallback. Under
/// pipelined RESP that was ~3 allocations per request and 8 % of a shard's
/// instructions (callgrind). Natural alignment (≤ 16 bytes, not above the
/// size) is what `mi_malloc` guarantees, as the crate itself used to check.
struct MiMalloc;

/// Alignment every `mi_malloc` block of at least this size has (mimalloc's
/// `MI_MAX_ALIGN_SIZE`); smaller blocks are aligned to their size class,
/// hence the `align <= size` condition.
const MI_MIN_ALIGN: usize = 16;

fn mi_plain(layout: std::alloc::Layout, size: usize) -> bool {
    layout.align() <= MI_MIN_ALIGN && layout.align() <= size
}

// SAFETY: every block comes from mimalloc with at least the layout's
// alignment (plain blocks per `mi_plain`, the rest from the aligned API),
// and mimalloc frees and reallocates any of its blocks.
unsafe impl std::alloc::GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if mi_plain(layout, layout.size()) {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if mi_plain(layout, layout.size()) {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if mi_plain(layout, new_size) {
            libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

#[derive(Parser)]
#[command(
    name = "corekv",
    version,
    about = "A Dynamo-style distributed key-value store, thread-per-core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (single node with no flags: data in ./corekv-data,
    /// native protocol on 127.0.0.1:7000, RESP on 127.0.0.1:7379).
    Serve(Box<ServeArgs>),
    /// Write a value (reads the key first, so the write replaces what is there).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Time to live in seconds.
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Read a key; prints every sibling if there are concurrent versions.
    /// Exits 1 when the key does not exist.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Load generator: open-loop (fixed rate, latency from intended send
    /// time) or closed-loop, YCSB or custom mixes, native or RESP, one or
    /// several targets compared side by side.
    Bench(Box<corekv_bench::cli::BenchArgs>),
    /// Anti-entropy: compare this node's ranges with every other replica
    /// (Merkle trees) and exchange the keys that differ; shows progress and
    /// waits until every shard is done.
    Repair {
        /// Only this token range, START:END (inclusive).
        #[arg(long, value_parser = ops::parse_range)]
        range: Option<(u64, u64)>,
        /// Only against this node id.
        #[arg(long)]
        node: Option<u32>,
        /// Give up following after this many seconds (the repair goes on).
        #[arg(long, default_value_t = 3600)]
        wait_s: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Flush every shard's memtable and merge its SSTables into one (a
    /// major compaction, like `nodetool compact`); waits until done.
    Compact {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Measure the disk (`tune io`) or check the host (`tune host`).
    #[command(subcommand)]
    Tune(tune::TuneCommand),
    /// Hand this node's ranges to their new owners and leave the ring
    /// (refused if fewer nodes than the replication factor would remain);
    /// shows progress and waits until done.
    Decommission {
        /// Give up following after this many seconds (the handoff goes on).
        #[arg(long, default_value_t = 3600)]
        wait_s: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Remove a node that is dead for good: its ranges get new owners, and
    /// every remaining node repairs so each range has N copies again.
    Removenode {
        /// The dead node's id.
        id: u32,
        /// Give up following each repair after this many seconds.
        #[arg(long, default_value_t = 3600)]
        wait_s: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Manage the users file clients authenticate against (`users_file`).
    #[command(subcommand)]
    User(UserCommand),
    /// Show the node: shards, keys, memtable and SSTable sizes, commit-log mode.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// `corekv user ...`: edits a users file in place (atomically, mode
/// 0600). Nodes read it at start: restart them to apply a change.
#[derive(Subcommand)]
enum UserCommand {
    /// Add a user, or replace one (new password, role and keys). The
    /// password is read from the first line of standard input, so it
    /// never shows in `ps` or the shell history.
    Add {
        /// The user name.
        name: String,
        /// read, readwrite or admin.
        #[arg(long, value_parser = parse_role)]
        role: corekv_cluster::auth::Role,
        /// A key pattern the user may touch (`*` matches any run of
        /// bytes); repeat for several; none means every key.
        #[arg(long = "key")]
        keys: Vec<String>,
        /// The users file (created if missing).
        #[arg(long)]
        users_file: PathBuf,
    },
    /// Remove a user.
    Remove {
        /// The user name.
        name: String,
        /// The users file.
        #[arg(long)]
        users_file: PathBuf,
    },
}

fn parse_role(text: &str) -> std::result::Result<corekv_cluster::auth::Role, String> {
    corekv_cluster::auth::Role::parse(text)
        .ok_or_else(|| format!("unknown role {text:?} (read, readwrite or admin)"))
}

fn run_user_command(command: UserCommand) -> Result<()> {
    use corekv_cluster::auth::UsersFile;
    match command {
        UserCommand::Add {
            name,
            role,
            keys,
            users_file,
        } => {
            anyhow::ensure!(
                !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control()),
                "a user name is non-empty, without spaces or control characters"
            );
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(
                password.len() >= 8,
                "the password (first line of standard input) needs at least 8 characters"
            );
            let mut file = UsersFile::read_or_empty(&users_file)?;
            let replaced = file.users.contains_key(&name);
            file.set_user(&name, password.as_bytes(), role, keys)?;
            file.write_atomically(&users_file)?;
            println!(
                "{} user {name} (role {}) in {}; restart the nodes that use it",
                if replaced { "replaced" } else { "added" },
                role.name(),
                users_file.display()
            );
        }
        UserCommand::Remove { name, users_file } => {
            let mut file = UsersFile::read_or_empty(&users_file)?;
            anyhow::ensure!(
                file.users.remove(&name).is_some(),
                "no user {name} in {}",
                users_file.display()
            );
            file.write_atomically(&users_file)?;
            println!(
                "removed user {name} from {}; restart the nodes that use it",
                users_file.display()
            );
        }
    }
    Ok(())
}

#[derive(Args)]
struct ConnArgs {
    /// Address of a node's native protocol port.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    /// Connect and request timeout, in seconds.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// Consistency level: one, two, quorum, all or a replica count
    /// (default: the cluster's).
    #[arg(long, short = 'l')]
    consistency: Option<String>,
    /// Authenticate as this user (with the password in the environment
    /// variable COREKV_PASSWORD; `default` when only that is set).
    #[arg(long)]
    user: Option<String>,
    /// Connect with TLS, checking the server's certificate against this
    /// PEM CA.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// With --tls-ca: present this PEM client certificate (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ConnArgs {
    fn level(&self) -> Result<Consistency> {
        match &self.consistency {
            None => Ok(Consistency::Default),
            Some(text) => Ok(corekv_cluster::runtime::config::parse_level(text)?),
        }
    }

    fn connect(&self) -> Result<Client> {
        let timeout = Duration::from_secs(self.timeout.max(1));
        let connected = match &self.tls_ca {
            None => Client::connect(&self.addr, timeout),
            Some(ca) => {
                let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
                let config = corekv_net::tls::client_config(ca, identity)?;
                Client::connect_tls(&self.addr, timeout, config)
            }
        };
        let mut client = connected.with_context(|| {
            format!(
                "cannot connect to corekv at {} (is `corekv serve` running?)",
                self.addr
            )
        })?;
        login(&mut client, self.user.as_deref(), &self.addr)?;
        Ok(client)
    }
}

/// Authenticates `client` as `user` when a password is in COREKV_PASSWORD
/// (as `default` with no `--user`); nothing when neither is given. The
/// password comes from the environment, never the command line (which
/// every user of the host can read in `ps`).
fn login(client: &mut Client, user: Option<&str>, addr: &str) -> Result<()> {
    match (user, std::env::var_os("COREKV_PASSWORD")) {
        (None, None) => Ok(()),
        (Some(user), None) => anyhow::bail!("--user {user} needs the password in COREKV_PASSWORD"),
        (user, Some(password)) => {
            let user = user.unwrap_or(corekv_cluster::auth::DEFAULT_USER);
            client
                .auth(user.as_bytes(), password.as_encoded_bytes())
                .with_context(|| format!("authenticating as {user} at {addr}"))
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file; flags override its values.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shards (executors pinned to cores); default one per core.
    #[arg(long)]
    shards: Option<usize>,
    /// Native protocol address (shard i also listens on port + 1 + i).
    #[arg(long)]
    native_addr: Option<std::net::SocketAddr>,
    /// RESP (Redis protocol) address.
    #[arg(long)]
    resp_addr: Option<std::net::SocketAddr>,
    /// Commit-log sync mode: batch (ack after fdatasync) or periodic.
    #[arg(long, value_parser = ["batch", "periodic"])]
    commitlog_sync: Option<String>,
    /// fdatasync period in periodic mode, in ms.
    #[arg(long)]
    commitlog_sync_period_ms: Option<u64>,
    /// Conflict handling: siblings or lww.
    #[arg(long, value_parser = ["siblings", "lww"])]
    conflict: Option<String>,
    /// Memtable flush threshold per shard, MiB.
    #[arg(long)]
    memtable_mib: Option<u64>,
    /// Commit-log size per shard that triggers a flush, MiB.
    #[arg(long)]
    commitlog_total_mib: Option<u64>,
    /// Block cache per shard, MiB.
    #[arg(long)]
    block_cache_mib: Option<u64>,
    /// CPUs to pin shards to, e.g. 0 or 0,1 (default: all online CPUs).
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Largest value accepted, in bytes.
    #[arg(long)]
    max_value_bytes: Option<usize>,
    /// Largest key accepted, in bytes.
    #[arg(long)]
    max_key_bytes: Option<usize>,
    /// Most versions one key may hold (more: TOO_MANY_SIBLINGS).
    #[arg(long)]
    max_siblings: Option<usize>,
    /// How far ahead of this node's clock a request's clock reading may be, ms.
    #[arg(long)]
    max_clock_skew_ms: Option<u64>,
    /// Log filter (e.g. info, debug, corekv_engine=debug).
    #[arg(long)]
    log: Option<String>,
    /// Internode address (shard i listens on port + i).
    #[arg(long)]
    peer_addr: Option<std::net::SocketAddr>,
    /// This node's id, unique in the cluster.
    #[arg(long)]
    node_id: Option<u32>,
    /// Internode addresses of members to join through, e.g.
    /// 10.0.0.1:7100,10.0.0.2:7100.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<std::net::SocketAddr>>,
    /// A file holding the cluster secret (every member the same, at least
    /// 16 bytes): authenticates internode connections and gossip.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// A users file (TOML, argon2 hashes; `corekv user add` writes it):
    /// clients must authenticate.
    #[arg(long)]
    users_file: Option<PathBuf>,
    /// PEM certificate chain of this node: with --tls-key-file the client
    /// ports and admin HTTP speak TLS 1.3 only.
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long)]
    tls_key_file: Option<PathBuf>,
    /// PEM CA: client certificates (and, with --internode-tls, nodes') are
    /// checked against it.
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// With --tls-ca-file: yes (client certificates required), optional or no.
    #[arg(long, value_parser = ["yes", "optional", "no"])]
    tls_auth_clients: Option<String>,
    /// Internode connections are mutual TLS against --tls-ca-file.
    #[arg(long)]
    internode_tls: bool,
    /// A TLS handshake must finish within this many ms of the accept.
    #[arg(long)]
    tls_handshake_timeout_ms: Option<u64>,
    /// This node's rack (replicas spread over racks).
    #[arg(long)]
    rack: Option<String>,
    /// This node's data centre.
    #[arg(long)]
    dc: Option<String>,
    /// Admin HTTP address for /metrics, /health and /status ("off" disables).
    #[arg(long)]
    admin_addr: Option<String>,
    /// io properties file from `corekv tune io` (default
    /// DATA_DIR/io-properties.toml if it exists; "off" ignores it).
    #[arg(long)]
    io_properties: Option<PathBuf>,
    /// Commit-log group-commit batch bound, KiB (overrides the io properties).
    #[arg(long)]
    commit_batch_kib: Option<u64>,
    /// Table-block reads per shard in flight (overrides the io properties).
    #[arg(long)]
    io_queue_depth: Option<usize>,
}

impl ServeArgs {
    fn into_config(self) -> Result<NodeConfig> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.shards {
            c.shards = v;
        }
        if let Some(v) = self.native_addr {
            c.native_addr = v;
        }
        if let Some(v) = self.resp_addr {
            c.resp_addr = v;
        }
        if let Some(v) = self.commitlog_sync {
            c.commitlog_sync = v;
        }
        if let Some(v) = self.commitlog_sync_period_ms {
            c.commitlog_sync_period_ms = v;
        }
        if let Some(v) = self.conflict {
            c.conflict = v;
        }
        if let Some(v) = self.memtable_mib {
            c.memtable_mib = v;
        }
        if let Some(v) = self.commitlog_total_mib {
            c.commitlog_total_mib = Some(v);
        }
        if let Some(v) = self.block_cache_mib {
            c.block_cache_mib = v;
        }
        if let Some(v) = self.cpus {
            c.cpus = v;
        }
        if let Some(v) = self.max_value_bytes {
            c.max_value_bytes = v;
        }
        if let Some(v) = self.max_key_bytes {
            c.max_key_bytes = v;
        }
        if let Some(v) = self.max_siblings {
            c.max_siblings = v;
        }
        if let Some(v) = self.max_clock_skew_ms {
            c.max_clock_skew_ms = v;
        }
        if let Some(v) = self.log {
            c.log = v;
        }
        if let Some(v) = self.peer_addr {
            c.peer_addr = v;
        }
        if let Some(v) = self.node_id {
            c.node_id = v;
        }
        if let Some(v) = self.seeds {
            c.seeds = v;
        }
        if let Some(v) = self.cluster_secret_file {
            c.cluster_secret_file = Some(v);
        }
        if let Some(v) = self.users_file {
            c.users_file = Some(v);
        }
        if let Some(v) = self.tls_cert_file {
            c.tls_cert_file = Some(v);
        }
        if let Some(v) = self.tls_key_file {
            c.tls_key_file = Some(v);
        }
        if let Some(v) = self.tls_ca_file {
            c.tls_ca_file = Some(v);
        }
        if let Some(v) = self.tls_auth_clients {
            c.tls_auth_clients = v;
        }
        if self.internode_tls {
            c.internode_tls = true;
        }
        if let Some(v) = self.tls_handshake_timeout_ms {
            c.tls_handshake_timeout_ms = v;
        }
        if let Some(v) = self.rack {
            c.rack = v;
        }
        if let Some(v) = self.dc {
            c.dc = v;
        }
        if let Some(v) = self.admin_addr {
            c.admin_addr = v;
        }
        if let Some(v) = self.io_properties {
            c.io_properties = Some(v);
        }
        if let Some(v) = self.commit_batch_kib {
            c.commit_batch_kib = Some(v);
        }
        if let Some(v) = self.io_queue_depth {
            c.io_queue_depth = Some(v);
        }
        Ok(c)
    }
}

fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogSink)
        // Its own report of a failed write would go to the same stderr
        // with `eprintln!`, which panics when that write fails too.
        .log_internal_errors(false)
        .init();
    Ok(())
}

/// Where log lines go: stderr, and never an error. A line stderr refuses
/// (a log file on a full disk, a closed pipe) is counted in
/// `corekv_log_lines_lost_total` and dropped: a node keeps serving when
/// its log cannot be written.
struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().write_all(line).is_err() {
            corekv_cluster::admin::LOG_LINES_LOST
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The printing commands end quietly when their reader goes away
/// (`corekv status | head`), as Unix tools do, instead of panicking on a
/// broken pipe. `serve` and `bench` keep Rust's default (SIGPIPE ignored):
/// their sockets report a vanished peer as an error to handle.
fn quiet_on_closed_stdout(command: &Command) {
    if !matches!(command, Command::Serve(_) | Command::Bench(_)) {
        // SAFETY: restoring the default disposition of one signal, before
        // any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    quiet_on_closed_stdout(&cli.command);
    match cli.command {
        Command::Serve(args) => {
            let mut config = args.into_config()?;
            let io_line = tune::apply_io_properties(&mut config)?;
            init_logging(&config.log)?;
            if let Some(line) = io_line {
                tracing::info!("{line}");
            }
            corekv_cluster::run(config, StopHandle::default()).context("corekv serve failed")?;
            Ok(())
        }
        Command::Put {
            key,
            value,
            ttl,
            conn,
        } => {
            let level = conn.level()?;
            let mut c = conn.connect()?;
            let context = read_context(&mut c, &key, level)?;
            let ttl_ms = ttl.map_or(0, |s| s.saturating_mul(1000));
            c.call(RequestBody::Put {
                consistency: level,
                ttl_ms,
                context,
                key: key.into_bytes(),
                value: value.into_bytes(),
            })?;
            println!("OK");
            Ok(())
        }
        Command::Get { key, conn } => match conn.connect()?.call(RequestBody::Get {
            consistency: conn.level()?,
            key: key.into_bytes(),
        })? {
            ResponseBody::Value { mut siblings, .. } => {
                // Oldest first (the wire order is by dot, which means
                // nothing to a reader).
                siblings.sort_by_key(|s| s.timestamp);
                let many = siblings.len() > 1;
                for (i, s) in siblings.iter().enumerate() {
                    let value = String::from_utf8_lossy(s.value.as_deref().unwrap_or_default());
                    if many {
                        println!("sibling {}: {value}", i + 1);
                    } else {
                        println!("{value}");
                    }
                }
                Ok(())
            }
            ResponseBody::NotFound { .. } => {
                eprintln!("(not found)");
                std::process::exit(1);
            }
            other => bail!("unexpected answer to GET: {other:?}"),
        },
        Command::Del { key, conn } => {
            let level = conn.level()?;
            let mut c = conn.connect()?;
            let context = read_context(&mut c, &key, level)?;
            c.call(RequestBody::Delete {
                consistency: level,
                context,
                key: key.into_bytes(),
            })?;
            println!("OK");
            Ok(())
        }
        Command::Tune(cmd) => tune::run(cmd),
        Command::Bench(args) => {
            args.run(&mut std::io::stdout().lock())?;
            Ok(())
        }
        Command::Repair {
            range,
            node,
            wait_s,
            conn,
        } => ops::repair(
            &mut conn.connect()?,
            range,
            node,
            Duration::from_secs(wait_s),
        ),
        Command::User(command) => run_user_command(command),
        Command::Compact { conn } => {
            let answer = ops::admin(
                &mut conn.connect()?,
                &serde_json::json!({ "op": "compact" }),
            )?;
            println!(
                "compacted {} shards: {} SSTables, {:.1} MiB",
                answer["compacted"],
                answer["sstables"],
                answer["sstable_bytes"].as_u64().unwrap_or(0) as f64 / (1024.0 * 1024.0)
            );
            Ok(())
        }
        Command::Decommission { wait_s, conn } => {
            ops::decommission(&mut conn.connect()?, Duration::from_secs(wait_s))
        }
        Command::Removenode { id, wait_s, conn } => ops::removenode(
            &mut conn.connect()?,
            id,
            Duration::from_secs(conn.timeout.max(1)),
            Duration::from_secs(wait_s),
        ),
        Command::Status { json, conn } => {
            let body = conn
                .connect()?
                .call(corekv_net::native::RequestBody::Status)?;
            let ResponseBody::Status(bytes) = body else {
                bail!("unexpected answer to STATUS: {body:?}");
            };
            let text = String::from_utf8_lossy(&bytes);
            if json {
                println!("{text}");
            } else {
                print_status(
                    &text,
                    Duration::from_secs(conn.timeout.clamp(1, 2)),
                    conn.user.as_deref(),
                )?;
            }
            Ok(())
        }
    }
}

/// The causal context of a read, so the following write supersedes what
/// is there (every sibling) instead of adding one.
fn read_context(c: &mut Client, key: &str, level: Consistency) -> Result<Vec<u8>> {
    match c.call(RequestBody::Get {
        consistency: level,
        key: key.as_bytes().to_vec(),
    })? {
        ResponseBody::Value { context, .. } | ResponseBody::NotFound { context } => Ok(context),
        other => bail!("unexpected answer to GET: {other:?}"),
    }
}

/// Prints the STATUS JSON as a table.
/// One member's own figures, asked directly (the table's load columns);
/// `None` when it does not answer.
fn member_status(addr: &str, timeout: Duration, user: Option<&str>) -> Option<serde_json::Value> {
    let mut c = Client::connect(addr, timeout).ok()?;
    login(&mut c, user, addr).ok()?;
    match c.call(RequestBody::Status).ok()? {
        ResponseBody::Status(bytes) => serde_json::from_slice(&bytes).ok(),
        _ => None,
    }
}

fn print_status(json: &str, member_timeout: Duration, user: Option<&str>) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("server sent malformed status JSON")?;
    println!("shards:          {}", v["shards"]);
    println!("keys (estimate): {}", v["keys_estimate"]);
    println!("memtable bytes:  {}", v["memtable_bytes"]);
    println!("sstable bytes:   {}", v["sstable_bytes"]);
    println!(
        "commit log sync: {}",
        v["commitlog_sync"].as_str().unwrap_or("?")
    );
    let mib = |key: &str| {
        v[key]
            .as_u64()
            .map_or("?".to_string(), |b| (b >> 20).to_string())
    };
    println!(
        "commit log:      {} MiB live (a shard flushes at {} MiB)",
        mib("commitlog_live_bytes"),
        mib("commitlog_live_bytes_max_per_shard")
    );
    if let (Some(syncs), Some(records), Some(us)) = (
        v["commitlog_syncs"].as_u64(),
        v["commitlog_records"].as_u64(),
        v["commitlog_sync_time_us"].as_u64(),
    ) {
        // Group commit at a glance: how many writes one fdatasync covers
        // and what one costs (since start).
        if syncs > 0 {
            println!(
                "group commit:    {:.1} writes per fdatasync, {} µs per fdatasync ({syncs} syncs)",
                records as f64 / syncs as f64,
                us / syncs
            );
        } else {
            println!("group commit:    no fdatasync yet ({records} writes)");
        }
    }
    println!(
        "cluster:         {} (node {}, N = {})",
        v["cluster"].as_str().unwrap_or("?"),
        v["node_id"],
        v["replication_factor"]
    );
    println!();
    // Like nodetool status: state and status are this node's view (its
    // failure detector, what each node announced); load and hints come
    // from asking each member.
    println!(
        "{:<11} {:<8} {:>6} {:<22} {:<8} {:<8} {:>6} {:>8} {:>12} {:>12} {:>8}",
        "state",
        "status",
        "node",
        "native",
        "rack",
        "dc",
        "shards",
        "owns",
        "keys",
        "bytes",
        "hints"
    );
    for m in v["members"].as_array().into_iter().flatten() {
        let down = !m["up"].as_bool().unwrap_or(false);
        let addr = m["native_addr"].as_str().unwrap_or("?");
        let own = member_status(addr, member_timeout, user);
        let figure = |f: &dyn Fn(&serde_json::Value) -> Option<u64>| {
            own.as_ref()
                .and_then(f)
                .map_or_else(|| "?".to_string(), |n| n.to_string())
        };
        let state = match (down, own.is_some()) {
            (false, true) => "UP",
            (true, _) => "DOWN",
            (false, false) => "UNREACHABLE",
        };
        println!(
            "{:<11} {:<8} {:>6} {:<22} {:<8} {:<8} {:>6} {:>7.1}% {:>12} {:>12} {:>8}",
            state,
            m["status"].as_str().unwrap_or("?"),
            m["id"].to_string(),
            addr,
            m["rack"].as_str().unwrap_or("?"),
            m["dc"].as_str().unwrap_or("?"),
            m["shards"].to_string(),
            m["ownership"].as_f64().unwrap_or(0.0) * 100.0,
            figure(&|s| s["keys_estimate"].as_u64()),
            figure(&|s| Some(s["memtable_bytes"].as_u64()? + s["sstable_bytes"].as_u64()?)),
            figure(&|s| s["totals"]["hints_pending"].as_u64()),
        );
    }
    let c = &v["totals"];
    println!(
        "\nread repairs {} · replica failures {} · unavailable {} · timeouts {} · hints pending {} (stored {}, delivered {}, dropped {}; oldest {})",
        c["read_repairs"], c["replica_failures"], c["unavailable"], c["timeouts"],
        c["hints_pending"], c["hints_stored"], c["hints_delivered"], c["hints_dropped"],
        match c["hints_oldest_ms"].as_u64() {
            None | Some(0) => "none".to_string(),
            Some(t) => format!(
                "{} s old",
                corekv_engine::version::wall_clock_ms().saturating_sub(t) / 1000
            ),
        }
    );
    println!(
        "this node: {} · repair: {} runs, last {} · {} segments left · {} keys pulled, {} pushed · streaming: {}/{} ranges, {} keys{}",
        v["status"].as_str().unwrap_or("?"),
        c["repair_runs"],
        match c["repair_last_finished_ms"].as_u64() {
            None | Some(0) => "never since start".to_string(),
            Some(t) => format!(
                "{} s ago",
                corekv_engine::version::wall_clock_ms().saturating_sub(t) / 1000
            ),
        },
        c["repair_segments_total"].as_u64().unwrap_or(0).saturating_sub(c["repair_segments_done"].as_u64().unwrap_or(0)),
        c["repair_keys_pulled"],
        c["repair_keys_pushed"],
        c["stream_ranges_done"],
        c["stream_ranges_total"],
        c["stream_keys"],
        v["movement_error"]
            .as_str()
            .map(|e| format!(" · FAILED: {e}"))
            .unwrap_or_default()
    );
    println!();
    println!(
        "{:>5} {:>12} {:>14} {:>8} {:>14} {:>10} {:>10}",
        "shard", "mem keys", "mem bytes", "tables", "table bytes", "writes", "gets"
    );
    for s in v["per_shard"].as_array().into_iter().flatten() {
        println!(
            "{:>5} {:>12} {:>14} {:>8} {:>14} {:>10} {:>10}",
            s["shard"].to_string(),
            s["memtable_keys"].to_string(),
            s["memtable_bytes"].to_string(),
            s["sstables"].to_string(),
            s["sstable_bytes"].to_string(),
            s["applies"].to_string(),
            s["gets"].to_string()
        );
    }
    Ok(())
}
