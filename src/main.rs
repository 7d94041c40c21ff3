//! The `corekv` command line: the server (`serve`) and the tools around it.
//! Only argument parsing and wiring live here; everything else is in the
//! crates (engine, net, cluster).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use corekv_cluster::{NodeConfig, StopHandle};

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
    Serve(ServeArgs),
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
    /// Block cache per shard, MiB.
    #[arg(long)]
    block_cache_mib: Option<u64>,
    /// Log filter (e.g. info, debug, corekv_engine=debug).
    #[arg(long)]
    log: Option<String>,
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
        if let Some(v) = self.block_cache_mib {
            c.block_cache_mib = v;
        }
        if let Some(v) = self.log {
            c.log = v;
        }
        Ok(c)
    }
}

fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = args.into_config()?;
            init_logging(&config.log)?;
            corekv_cluster::run(config, StopHandle::default()).context("corekv serve failed")?;
            Ok(())
        }
    }
}
