//! Starting and stopping a node: one pinned glommio executor per shard,
//! each opening its engine, joining the channel mesh and accepting clients.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use super::config::NodeConfig;
use super::datadir;
use super::health::{self, ShardHealth};
use super::router::{serve_forwards, Forward, Router};
use crate::admin::{self, ReportSender, ShardReport};
use crate::coordinator::{Coordinator, HintStore};
use crate::error::{Error, Result};
use crate::gossip;
use crate::gossip::NodeStatus;
use crate::movement::{self, Movement};
use crate::runtime::control::NodeControl;
use crate::server::{self, Shutdown};
use crate::topology::SharedTopology;

/// Capacity of each shard-to-shard channel: how many forwarded requests may
/// queue before the sender waits.
const MESH_CHANNEL_CAPACITY: usize = 1024;
/// How often a shard sends its figures to the admin endpoint.
const REPORT_PERIOD: Duration = Duration::from_secs(1);
/// How long a stopping shard waits for in-flight requests to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Test hook: `COREKV_TEST_PANIC_SHARD=<i>` makes shard `i` panic
/// `COREKV_TEST_PANIC_AFTER_MS` (default 1000) ms after it is ready. Read
/// from the environment of `corekv serve` only, so no client can reach it;
/// it exists for the end-to-end test of what a shard panic does.
const TEST_PANIC_SHARD: &str = "COREKV_TEST_PANIC_SHARD";
const TEST_PANIC_AFTER_MS: &str = "COREKV_TEST_PANIC_AFTER_MS";

/// The test hook's setting: which shard panics, and when.
fn test_panic_hook() -> Result<Option<(usize, Duration)>> {
    let Ok(shard) = std::env::var(TEST_PANIC_SHARD) else {
        return Ok(None);
    };
    let shard = shard
        .trim()
        .parse::<usize>()
        .map_err(|e| Error::Config(format!("{TEST_PANIC_SHARD}={shard:?}: {e}")))?;
    let after = match std::env::var(TEST_PANIC_AFTER_MS) {
        Ok(ms) => ms
            .trim()
            .parse::<u64>()
            .map_err(|e| Error::Config(format!("{TEST_PANIC_AFTER_MS}={ms:?}: {e}")))?,
        Err(_) => 1000,
    };
    tracing::warn!(
        shard,
        after_ms = after,
        "test hook {TEST_PANIC_SHARD} is set: this shard will panic on purpose"
    );
    Ok(Some((shard, Duration::from_millis(after))))
}

/// Handle to tell a running node to stop (what SIGTERM and SIGINT do).
#[derive(Clone, Default)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
}

impl StopHandle {
    /// Asks every shard to stop accepting, drain, flush and exit.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// True once a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Runs a node until SIGTERM/SIGINT (or `stop`), then shuts down cleanly:
/// stop accepting, finish in-flight requests, flush memtables, exit.
/// Returns an error when the configuration, data directory or a shard fails.
pub fn run(mut config: NodeConfig, stop: StopHandle) -> Result<()> {
    config.validate()?;
    config.load_secret()?;
    config.load_users()?;
    config.load_tls()?;
    let shards = config.shard_count();
    let panic_test = test_panic_hook()?;
    health::install_panic_hook();
    let shard_health = Arc::new(ShardHealth::new(stop.clone()));
    config.epoch = datadir::prepare(&config.data_dir, shards)?;
    let _lock = datadir::lock(&config.data_dir)?;
    if config.commitlog_sync == "periodic" && datadir::lost_power_while_running(&config.data_dir) {
        tracing::warn!(
            "the machine went down while this node ran in periodic commit-log mode: \
             acknowledged writes of its last sync period may be lost here, so it starts a new epoch \
             (its new writes cannot be mistaken for the lost ones)"
        );
        config.epoch = datadir::renew_epoch(&config.data_dir, shards, config.epoch)?;
    }
    datadir::mark_running(&config.data_dir).map_err(|e| Error::Io {
        context: "writing the data directory's RUNNING marker".into(),
        source: e,
    })?;
    let status = initial_status(&config)?;
    ports_are_free(&config, shards)?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.flag.clone()).map_err(|e| Error::Io {
            context: "installing signal handlers".into(),
            source: e,
        })?;
    }
    let _users_watcher = match &config.users {
        Some(users) if users.0.users_file().is_some() => Some(
            crate::auth::reload::spawn_watcher(
                users.0.clone(),
                config.users_file_check_s,
                stop.flag.clone(),
            )
            .map_err(|e| Error::Io {
                context: "starting the users-file watcher".into(),
                source: e,
            })?,
        ),
        _ => None,
    };
    let cpus = glommio::CpuSet::online().map_err(|e| Error::Io {
        context: "listing online CPUs".into(),
        source: e.into(),
    })?;
    // The CPUs `cpus` leaves out take each shard's blocking thread: its
    // fsyncs (and their writeback), unlinks and manifest writes then cost
    // the spare CPU, not the shard's. Without spares it shares the shard's.
    let (cpus, spare) = if config.cpus.is_empty() {
        (cpus, None)
    } else {
        let spare = cpus.clone().filter(|l| !config.cpus.contains(&l.cpu));
        let shard_cpus = cpus.filter(|l| config.cpus.contains(&l.cpu));
        (shard_cpus, Some(spare).filter(|s| !s.is_empty()))
    };
    // Pin one executor per CPU when there are enough; otherwise let the OS
    // place them (e.g. a 4-shard test on a 2-core machine).
    let placement = if shards <= cpus.len() {
        PoolPlacement::MaxSpread(shards, Some(cpus))
    } else {
        PoolPlacement::Unbound(shards)
    };
    tracing::info!(shards, native = %config.native_addr, resp = %config.resp_addr, data = %config.data_dir.display(), "starting corekv node");
    let control = Arc::new(NodeControl::default());
    let gossip = gossip::service::start(&config, status, control.clone(), stop.clone())?;
    let stop_gossip = stop.clone();
    let (topology, gossip_stats) = (gossip.topology.clone(), gossip.stats.clone());
    match status {
        NodeStatus::Joining => control.start_movement(Movement::Bootstrap, shards),
        NodeStatus::Leaving => control.start_movement(Movement::Decommission, shards),
        _ => {}
    }
    {
        let t = topology.load();
        tracing::info!(
            members = t.members().len(),
            replication_factor = t.replication_factor(),
            cluster = t.cluster(),
            peer = %config.peer_addr,
            seeds = ?config.seeds,
            "gossip started"
        );
    }
    // The admin endpoint outlives the shards' stop so that /health can
    // name a dead shard while the others drain; it ends when `run` does.
    let admin_stop = StopHandle::default();
    let _admin_guard = StopOnDrop(admin_stop.clone());
    let reports = match config.admin_socket_addr()? {
        Some(addr) => {
            let sender = admin::start(
                addr,
                shards,
                admin_stop.clone(),
                gossip_stats,
                shard_health.clone(),
                config.tls.as_ref().and_then(|t| t.admin.clone()),
            )?;
            tracing::info!(%addr, "admin endpoint: /metrics, /health, /status");
            Some(sender)
        }
        None => None,
    };
    let config_dir = config.data_dir.clone();
    let mesh = MeshBuilder::<Forward, _>::full(shards, MESH_CHANNEL_CAPACITY);
    let ready = Arc::new(AtomicUsize::new(0));
    let mut pool = LocalExecutorPoolBuilder::new(placement).name("corekv-shard");
    if let Some(spare) = spare {
        tracing::info!(cpus = ?spare.iter().map(|l| l.cpu).collect::<Vec<_>>(), "blocking threads on the CPUs left to spare");
        pool = pool.blocking_thread_pool_placement(PoolPlacement::Fenced(1, spare));
    }
    let shard_health_for_shards = shard_health.clone();
    let handles = pool
        .on_all_shards(move || {
            let config = config.clone();
            let stop = stop.clone();
            let ready = ready.clone();
            let topology = topology.clone();
            let reports = reports.clone();
            let control = control.clone();
            let health = shard_health_for_shards.clone();
            async move {
                let ended = stop.clone();
                let outcome = shard_main(
                    config, topology, control, mesh, stop, ready, reports, shards, health,
                    panic_test,
                )
                .await;
                if !ended.is_stopped() {
                    // A shard that ends on its own (an engine that failed
                    // to open, say) must not leave the others serving a
                    // node with a slice of its keys gone.
                    tracing::error!(
                        "a shard ended before the node was asked to stop: stopping the node"
                    );
                    ended.stop();
                }
                outcome
            }
        })
        .map_err(|e| Error::Io {
            context: "starting shard executors".into(),
            source: e.into(),
        })?;
    let mut first_error = None;
    for (i, outcome) in handles.join_all().into_iter().enumerate() {
        let result = outcome.map_err(|e| Error::Io {
            context: format!("shard {i} executor"),
            source: e.into(),
        });
        if let Err(e) | Ok(Err(e)) = result {
            tracing::error!(shard = i, error = %e, "shard failed");
            first_error.get_or_insert(e);
        }
    }
    // The gossip thread tells its peers this node's last state (and ends
    // even when shards failed rather than stopped).
    stop_gossip.stop();
    if gossip.thread.join().is_err() {
        tracing::warn!("the gossip thread panicked");
    }
    // A panic outranks the errors it caused in other shards (e.g. a
    // forward that found the dead shard gone).
    if let Some((shard, why)) = shard_health.dead().into_iter().next() {
        return Err(Error::ShardPanicked { shard, why });
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            if let Err(e) = datadir::mark_stopped(&config_dir) {
                tracing::warn!(error = %e, "could not remove the RUNNING marker");
            }
            tracing::info!("corekv node stopped cleanly");
            Ok(())
        }
    }
}

/// Sets its handle when dropped: whichever way `run` returns, the admin
/// thread stops with it.
struct StopOnDrop(StopHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The status this node starts with: the one an earlier run saved, or
/// joining on a first start with seeds elsewhere (bootstrap), else normal.
fn initial_status(config: &NodeConfig) -> Result<NodeStatus> {
    let saved = movement::load_node_status(&config.data_dir)?;
    let status = match saved {
        Some(NodeStatus::Left) => {
            return Err(Error::DataDir {
                path: config.data_dir.display().to_string(),
                reason: "this node was decommissioned or removed; to rejoin, start it on an empty data directory".into(),
            })
        }
        Some(s) => s,
        None => {
            let seeds_elsewhere = config.seeds.iter().any(|&s| s != config.peer_addr);
            if seeds_elsewhere && config.auto_bootstrap {
                NodeStatus::Joining
            } else {
                NodeStatus::Normal
            }
        }
    };
    movement::save_node_status(&config.data_dir, status).map_err(|e| Error::Io {
        context: "saving node-state.json".into(),
        source: e,
    })?;
    if saved.is_some_and(|s| s != NodeStatus::Normal) {
        tracing::info!(
            status = status.name(),
            "resuming an interrupted topology change"
        );
    }
    Ok(status)
}

/// Task-queue shares of repair (foreground queues have 1000): repair
/// takes what foreground work leaves, and a tenth when both compete.
const REPAIR_SHARES: usize = 100;

/// A shard's repair runs: started by an operator's request (a new trigger
/// epoch) or by the schedule, one at a time, in a low-share task queue.
struct Repairs {
    seen_epoch: u64,
    last_ms: u64,
    running: Rc<std::cell::Cell<bool>>,
    queue: glommio::TaskQueueHandle,
    /// When the last complete repair started (see `repair::full_repair_path`).
    full_ms: Rc<std::cell::Cell<u64>>,
    /// After a run with failed segments: when to retry, and the backoff
    /// that got there (doubling from REPAIR_RETRY_FIRST up to the interval).
    retry: Rc<std::cell::Cell<Option<(u64, u64)>>>,
}

/// The first retry of a repair that had failed segments comes this soon;
/// each further failure doubles the wait, up to `repair_interval_s`.
const REPAIR_RETRY_FIRST_MS: u64 = 30_000;

/// When to retry after a run that failed, given the previous backoff.
fn repair_retry(now_ms: u64, previous: Option<(u64, u64)>, interval_ms: u64) -> (u64, u64) {
    let backoff = match previous {
        Some((_, b)) => b.saturating_mul(2),
        None => REPAIR_RETRY_FIRST_MS,
    };
    let backoff = if interval_ms > 0 {
        backoff.min(interval_ms)
    } else {
        backoff
    };
    (now_ms.saturating_add(backoff), backoff)
}

impl Repairs {
    /// The tombstone-GC horizon the engine should use now: none when no
    /// other replica can exist, else the last complete repair's start.
    fn tombstone_horizon_ms(&self, coordinator: &Coordinator) -> u64 {
        let topo = coordinator.topology();
        if topo.members().len() <= 1 || topo.replication_factor() <= 1 {
            u64::MAX
        } else {
            self.full_ms.get()
        }
    }

    fn poll(
        &mut self,
        coordinator: &Rc<Coordinator>,
        control: &NodeControl,
        config: &NodeConfig,
        shard_dir: &std::path::Path,
    ) {
        let epoch = control.repair.epoch();
        let requested = epoch != self.seen_epoch;
        let now = corekv_engine::version::wall_clock_ms();
        let interval_ms = config.repair_interval_s.saturating_mul(1000);
        let retry_due = self.retry.get().is_some_and(|(at, _)| now >= at);
        let due = retry_due || (interval_ms > 0 && now.saturating_sub(self.last_ms) >= interval_ms);
        if !(requested || due) || self.running.get() {
            return;
        }
        self.seen_epoch = epoch;
        self.last_ms = now;
        let req = if requested {
            control.repair.latest()
        } else {
            crate::repair::RepairRequest::default()
        };
        let c = coordinator.clone();
        let mib = config.stream_mib_per_s;
        let dir = shard_dir.to_path_buf();
        let full = self.full_ms.clone();
        let retry = self.retry.clone();
        spawn_job(self.queue, &self.running, "repair", async move {
            let outcome = crate::repair::repair_shard(&c, &req, mib, &dir).await;
            if let Some(since) = outcome.complete_since_ms {
                full.set(since);
            }
            if outcome.failed == 0 {
                retry.set(None);
            } else {
                let now = corekv_engine::version::wall_clock_ms();
                let next = repair_retry(now, retry.get(), interval_ms);
                tracing::info!(
                    failed = outcome.failed,
                    retry_in_s = next.1 / 1000,
                    "repair had failed segments: retrying the shard's repair with backoff"
                );
                retry.set(Some(next));
            }
        });
    }
}

/// Starts `job` in the low-share `queue`, with `running` set until it
/// ends: a shard's background jobs run one of a kind at a time.
fn spawn_job(
    queue: glommio::TaskQueueHandle,
    running: &Rc<std::cell::Cell<bool>>,
    what: &str,
    job: impl std::future::Future<Output = ()> + 'static,
) {
    running.set(true);
    let flag = running.clone();
    let task = glommio::spawn_local_into(
        async move {
            job.await;
            flag.set(false);
        },
        queue,
    );
    match task {
        Ok(t) => {
            t.detach();
        }
        Err(e) => {
            running.set(false);
            tracing::warn!(error = %e, "could not start a {what} task");
        }
    }
}

/// A shard's part in this node's topology change (bootstrap or
/// decommission), started when the control cell's epoch moves.
struct Movements {
    seen_epoch: u64,
    running: Rc<std::cell::Cell<bool>>,
}

impl Movements {
    fn poll(
        &mut self,
        coordinator: &Rc<Coordinator>,
        control: &Arc<NodeControl>,
        config: &NodeConfig,
        shard_dir: &std::path::Path,
        queue: glommio::TaskQueueHandle,
    ) {
        let (epoch, movement) = control.movement();
        if epoch == self.seen_epoch || self.running.get() {
            return;
        }
        self.seen_epoch = epoch;
        let Some(movement) = movement else { return };
        let (c, control) = (coordinator.clone(), control.clone());
        let mib = config.stream_mib_per_s;
        let ring_delay = Duration::from_millis((5 * config.gossip_interval_ms).max(1000));
        let dir = shard_dir.to_path_buf();
        let data_dir = config.data_dir.clone();
        spawn_job(queue, &self.running, "streaming", async move {
            match movement::run_shard(&c, movement, mib, ring_delay, &dir).await {
                Ok(()) => {
                    if control.shard_done() {
                        let outcome = movement.outcome();
                        if let Err(e) = movement::save_node_status(&data_dir, outcome) {
                            tracing::error!(error = %e, "could not save node-state.json");
                        }
                        tracing::info!(status = outcome.name(), "topology change complete");
                        control.announce(outcome);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "topology change failed on this shard; restart the node to resume it");
                    control.fail(e);
                }
            }
        });
    }
}

/// Refuses to start when another process listens on one of our ports.
/// Shards bind with SO_REUSEPORT, which would otherwise let a second node
/// (or the sockets of a just-killed one) silently share our ports and take
/// part of our traffic. A plain bind fails whenever anyone holds the port.
fn ports_are_free(config: &NodeConfig, shards: usize) -> Result<()> {
    let mut addrs = vec![config.native_addr, config.resp_addr];
    addrs.extend(config.admin_socket_addr()?);
    for i in 0..shards {
        let mut a = config.native_addr;
        let port = u16::try_from(usize::from(a.port()) + 1 + i).map_err(|_| {
            Error::Config(format!("native port {} + shard {i} overflows", a.port()))
        })?;
        a.set_port(port);
        addrs.push(a);
        let mut p = config.peer_addr;
        let port = u16::try_from(usize::from(p.port()) + i)
            .map_err(|_| Error::Config(format!("peer port {} + shard {i} overflows", p.port())))?;
        p.set_port(port);
        addrs.push(p);
    }
    for addr in addrs {
        if addr.port() == 0 {
            continue;
        }
        std::net::TcpListener::bind(addr).map_err(|e| Error::Io {
            context: format!("port {addr} is taken (another corekv or program listens there; if a node was just killed, its sockets close within a second)"),
            source: e,
        })?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    config: NodeConfig,
    topology: Arc<SharedTopology>,
    control: Arc<NodeControl>,
    mesh: MeshBuilder<Forward, glommio::channels::channel_mesh::Full>,
    stop: StopHandle,
    ready: Arc<AtomicUsize>,
    reports: Option<ReportSender>,
    shards: usize,
    health: Arc<ShardHealth>,
    panic_test: Option<(usize, Duration)>,
) -> Result<()> {
    let (senders, receivers) = mesh.join().await.map_err(|_| Error::Io {
        context: "joining the shard channel mesh".into(),
        source: std::io::Error::other("mesh join failed"),
    })?;
    let index = senders.peer_id();
    health::enter_shard(index, health);
    let opts = config.engine_options(index)?;
    let engine =
        corekv_engine::Engine::open(datadir::shard_dir(&config.data_dir, index), opts).await?;
    let router = Rc::new(Router::new(engine.clone(), senders, shards));
    glommio::spawn_local(serve_forwards(
        engine.clone(),
        receivers,
        router.metrics().clone(),
    ))
    .detach();
    let hints = HintStore::open(
        &datadir::shard_dir(&config.data_dir, index).join("hints"),
        engine.options(),
        Duration::from_secs(config.hint_window_s),
        config.hints_max_per_shard,
        router.metrics().clone(),
    )
    .await?;
    let coordinator = Rc::new(Coordinator::new(
        router,
        topology,
        Rc::new(hints),
        control.clone(),
        &config,
    )?);
    let shutdown = Shutdown::new();
    let listeners = server::bind_all(&config, index)?;
    server::spawn_all(listeners, coordinator.clone(), &config, shutdown.clone())?;
    let stopping = shutdown.clone();
    glommio::spawn_local(
        coordinator
            .clone()
            .run_hint_replay(move || stopping.is_stopping()),
    )
    .detach();
    if let Some((shard, after)) = panic_test.filter(|&(s, _)| s == index) {
        // The test hook (see TEST_PANIC_SHARD): a task of its own, as a
        // bug in any request or background task would panic.
        glommio::spawn_local(async move {
            glommio::timer::sleep(after).await;
            panic!("{TEST_PANIC_SHARD} test hook: shard {shard} panics on purpose");
        })
        .detach();
    }
    if ready.fetch_add(1, Ordering::SeqCst) + 1 == shards {
        tracing::info!(
            shards,
            "corekv is ready: native on {}, RESP on {}",
            config.native_addr,
            config.resp_addr
        );
    }
    // Control loop: report figures once a second, wait for a stop request.
    let report = |serving: bool| {
        if let Some(tx) = &reports {
            tx.send(ShardReport {
                shard: index,
                engine: engine.stats(),
                metrics: coordinator.router().metrics().snapshot(),
                busy_us: glommio::executor()
                    .executor_stats()
                    .total_runtime()
                    .as_micros() as u64,
                serving,
            });
        }
    };
    let mut last_report = std::time::Instant::now();
    report(true);
    let shard_dir = datadir::shard_dir(&config.data_dir, index);
    let mut repairs = Repairs {
        seen_epoch: control.repair.epoch(),
        last_ms: crate::repair::load_last_repair(&shard_dir),
        full_ms: Rc::new(std::cell::Cell::new(crate::repair::load_full_repair(
            &shard_dir,
        ))),
        retry: Rc::new(std::cell::Cell::new(None)),
        running: Rc::new(std::cell::Cell::new(false)),
        queue: glommio::executor().create_task_queue(
            glommio::Shares::Static(REPAIR_SHARES),
            glommio::Latency::NotImportant,
            "repair",
        ),
    };
    let mut movements = Movements {
        seen_epoch: 0,
        running: Rc::new(std::cell::Cell::new(false)),
    };
    if repairs.last_ms == 0 {
        // Never repaired: the first scheduled repair is an interval from now.
        repairs.last_ms = corekv_engine::version::wall_clock_ms();
    }
    while !stop.is_stopped() {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        if last_report.elapsed() >= REPORT_PERIOD {
            report(true);
            last_report = std::time::Instant::now();
        }
        repairs.poll(&coordinator, &control, &config, &shard_dir);
        engine.set_tombstone_horizon_ms(repairs.tombstone_horizon_ms(&coordinator));
        movements.poll(&coordinator, &control, &config, &shard_dir, repairs.queue);
    }
    report(false);
    tracing::info!(
        shard = index,
        "stopping: no new connections, draining in-flight requests"
    );
    shutdown.begin();
    shutdown.drained(DRAIN_TIMEOUT).await;
    coordinator.close().await?;
    engine.close().await?;
    tracing::info!(shard = index, "flushed and closed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_repair_is_retried_soon_then_less_often_up_to_the_interval() {
        let hour = 3_600_000;
        let first = repair_retry(1_000, None, hour);
        assert_eq!(
            first,
            (1_000 + REPAIR_RETRY_FIRST_MS, REPAIR_RETRY_FIRST_MS)
        );
        let second = repair_retry(50_000, Some(first), hour);
        assert_eq!(second.1, 2 * REPAIR_RETRY_FIRST_MS);
        let mut last = second;
        for _ in 0..20 {
            last = repair_retry(0, Some(last), hour);
        }
        assert_eq!(last.1, hour, "never later than the scheduled interval");
        // Scheduled repair off: the backoff still grows, without bound
        // but without overflow.
        let mut off = repair_retry(u64::MAX - 1, None, 0);
        for _ in 0..80 {
            off = repair_retry(u64::MAX - 1, Some(off), 0);
        }
        assert_eq!(off.0, u64::MAX);
    }
}
