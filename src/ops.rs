//! Operator commands that start work on a node and follow it to the end
//! with a progress line: `corekv repair` (and the topology changes).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corekv_net::client::Client;
use corekv_net::native::{RequestBody, ResponseBody};
use serde_json::Value;

/// The node's STATUS JSON.
pub fn status(c: &mut Client) -> Result<Value> {
    match c.call(RequestBody::Status)? {
        ResponseBody::Status(bytes) => {
            serde_json::from_slice(&bytes).context("server sent malformed status JSON")
        }
        other => bail!("unexpected answer to STATUS: {other:?}"),
    }
}

/// Sends an ADMIN command; its JSON answer.
pub fn admin(c: &mut Client, command: &Value) -> Result<Value> {
    match c.call(RequestBody::Admin(command.to_string().into_bytes()))? {
        ResponseBody::Status(bytes) => {
            serde_json::from_slice(&bytes).context("server sent malformed JSON")
        }
        other => bail!("unexpected answer to ADMIN: {other:?}"),
    }
}

/// Parses `START:END` (inclusive tokens).
pub fn parse_range(text: &str) -> Result<(u64, u64)> {
    let (a, b) = text
        .split_once(':')
        .context("a range is START:END (inclusive tokens, e.g. 0:9223372036854775807)")?;
    let (a, b): (u64, u64) = (
        a.trim().parse().context("range start")?,
        b.trim().parse().context("range end")?,
    );
    if a > b {
        bail!("range start {a} is after its end {b}");
    }
    Ok((a, b))
}

fn total(v: &Value, field: &str) -> u64 {
    v["totals"][field].as_u64().unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Starts a repair on the node and follows it until every shard finished
/// (or `limit` passed); prints a progress line and a summary.
pub fn repair(
    c: &mut Client,
    range: Option<(u64, u64)>,
    node: Option<u32>,
    limit: Duration,
) -> Result<()> {
    let before = status(c)?;
    let shards = before["shards"].as_u64().unwrap_or(1);
    let runs_before = total(&before, "repair_runs");
    let (pulled0, pushed0, bytes0) = (
        total(&before, "repair_keys_pulled"),
        total(&before, "repair_keys_pushed"),
        total(&before, "repair_bytes"),
    );
    let mut cmd = serde_json::json!({ "op": "repair" });
    if let Some((s, e)) = range {
        cmd["start"] = s.into();
        cmd["end"] = e.into();
    }
    if let Some(n) = node {
        cmd["node"] = n.into();
    }
    admin(c, &cmd)?;
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = status(c)?;
        let done = total(&now, "repair_runs") >= runs_before + shards
            && total(&now, "repair_running") == 0;
        eprint!(
            "\rrepair: {}/{} segments · {} keys pulled · {} pushed · {} · {:.0} s   ",
            total(&now, "repair_segments_done"),
            total(&now, "repair_segments_total"),
            total(&now, "repair_keys_pulled") - pulled0,
            total(&now, "repair_keys_pushed") - pushed0,
            mib(total(&now, "repair_bytes") - bytes0),
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        if done {
            eprintln!();
            let errors = total(&now, "repair_errors") - total(&before, "repair_errors");
            println!(
                "repair finished in {:.1} s: {} keys pulled, {} pushed, {} exchanged, {} segments failed",
                started.elapsed().as_secs_f64(),
                total(&now, "repair_keys_pulled") - pulled0,
                total(&now, "repair_keys_pushed") - pushed0,
                mib(total(&now, "repair_bytes") - bytes0),
                errors
            );
            if errors > 0 {
                bail!("{errors} segments could not be repaired (see the node's log); run repair again when every replica is up");
            }
            return Ok(());
        }
        if started.elapsed() > limit {
            eprintln!();
            bail!("the repair is still running after {} s; it goes on in the background (watch `corekv status`)", limit.as_secs());
        }
    }
}

/// Decommissions the node: starts the handoff and follows it until the
/// node has left the ring.
pub fn decommission(c: &mut Client, limit: Duration) -> Result<()> {
    admin(c, &serde_json::json!({ "op": "decommission" }))?;
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = status(c)?;
        let state = now["status"].as_str().unwrap_or("?").to_string();
        if let Some(e) = now["movement_error"].as_str() {
            eprintln!();
            bail!("decommission stopped: {e}");
        }
        eprint!(
            "\rdecommission: {state} · {}/{} ranges · {} keys · {} sent · {:.0} s   ",
            total(&now, "stream_ranges_done"),
            total(&now, "stream_ranges_total"),
            total(&now, "stream_keys"),
            mib(total(&now, "stream_bytes")),
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        if state == "left" {
            eprintln!();
            println!(
                "decommissioned in {:.1} s: the node holds no ranges; stop it",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > limit {
            eprintln!();
            bail!(
                "still {state} after {} s; the handoff goes on in the background",
                limit.as_secs()
            );
        }
    }
}

/// Removes dead node `id`: the node at `c` declares it gone, then every
/// remaining member repairs, so each range again has N copies.
pub fn removenode(c: &mut Client, id: u32, timeout: Duration, limit: Duration) -> Result<()> {
    admin(c, &serde_json::json!({ "op": "removenode", "id": id }))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let members = loop {
        let now = status(c)?;
        let members: Vec<(u64, String)> = now["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["id"].as_u64()?, m["native_addr"].as_str()?.to_string())))
            .collect();
        if members.iter().all(|(m, _)| *m != u64::from(id)) {
            break members;
        }
        if Instant::now() > deadline {
            bail!("node {id} is still listed after 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "node {id} removed; repairing its ranges on {} nodes",
        members.len()
    );
    // Let every member learn of the removal before repairing.
    std::thread::sleep(Duration::from_secs(2));
    for (member, addr) in members {
        println!("node {member} ({addr}):");
        let mut m = Client::connect(addr.as_str(), timeout)
            .with_context(|| format!("cannot reach node {member} at {addr}"))?;
        repair(&mut m, None, None, limit)?;
    }
    Ok(())
}
