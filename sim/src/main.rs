//! `corekv-sim`: runs seeded simulations of a corekv cluster and reports
//! any broken guarantee with its seed and the broken key's history.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use corekv_sim::{run, settings_for, Flaw};

/// Deterministic simulation of a corekv cluster under seeded faults.
#[derive(Parser, Debug)]
#[command(name = "corekv-sim")]
struct Args {
    /// Run this many simulations, seeds `--first-seed` onwards.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Run this one seed only (replays a failure exactly).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the full trace of `--seed`.
    #[arg(long)]
    verbose: bool,
    /// Nodes per simulation (default: drawn from the seed, 3 to 20).
    #[arg(long)]
    nodes: Option<usize>,
    /// Plant a bug to see the checkers catch it: `quorum-off-by-one` or
    /// `hints-dropped`.
    #[arg(long)]
    flaw: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let flaw = match args.flaw.as_deref() {
        None => None,
        Some("quorum-off-by-one") => Some(Flaw::QuorumOffByOne),
        Some("hints-dropped") => Some(Flaw::HintsDropped),
        Some(other) => bail!("unknown flaw {other:?} (quorum-off-by-one, hints-dropped)"),
    };
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first_seed..args.first_seed.saturating_add(args.seeds)).collect(),
    };
    let started = Instant::now();
    let (mut failed, mut simulated_ms, mut events, mut ops) = (0u64, 0u64, 0u64, 0usize);
    for (i, &seed) in seeds.iter().enumerate() {
        let report = run(seed, settings_for(seed, args.nodes, flaw, args.verbose))?;
        simulated_ms += report.simulated_ms;
        events += report.events;
        ops += report.operations;
        for line in &report.trace {
            println!("{line}");
        }
        if args.seed.is_some() {
            println!(
                "seed {seed}: {} nodes, {} operations ({} writes acknowledged), {} events, trace {:016x}",
                report.nodes, report.operations, report.acked_writes, report.events, report.trace_digest
            );
        }
        if !report.violations.is_empty() {
            failed += 1;
            println!(
                "FAILED seed {seed} ({} nodes): replay with `corekv-sim --seed {seed} --verbose`",
                report.nodes
            );
            for v in report.violations.iter().take(5) {
                println!(
                    "  {}: key {}: {}",
                    v.check,
                    String::from_utf8_lossy(&v.key),
                    v.detail
                );
            }
            if report.violations.len() > 5 {
                println!("  ... and {} more", report.violations.len() - 5);
            }
            println!(
                "  history of key {}:",
                String::from_utf8_lossy(&report.violations[0].key)
            );
            for line in report.key_history.lines().take(60) {
                println!("    {line}");
            }
        }
        if seeds.len() > 20 && (i + 1) % 100 == 0 {
            eprintln!(
                "corekv-sim: {} of {} seeds, {failed} failed, {:.0} s",
                i + 1,
                seeds.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let real = started.elapsed().as_secs_f64();
    println!(
        "corekv-sim: {} seeds, {failed} failed; {ops} operations, {events} events, {:.0} simulated s in {real:.1} s ({:.0} simulated s per s)",
        seeds.len(),
        simulated_ms as f64 / 1000.0,
        simulated_ms as f64 / 1000.0 / real.max(1e-9)
    );
    if failed > 0 {
        bail!("{failed} of {} seeds broke a guarantee", seeds.len());
    }
    Ok(())
}
