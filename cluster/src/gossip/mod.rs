//! Membership by gossip, with a phi-accrual failure detector.
//!
//! A node starts with a few seed addresses, and within a few rounds knows
//! every member's metadata (id, addresses, shards, tokens, rack, dc), its
//! generation and announced status, and whether it is up. Newer
//! information always wins: see [`state`] for the ordering.
//!
//! Layers, so the logic is tested without sockets:
//! - [`state`]: what is gossiped; [`detector`]: phi accrual;
//! - [`gossiper`]: the SYN / ACK / ACK2 state machine, fed time and
//!   messages (sans-io);
//! - [`wire`]: the datagram codec, authenticated by the cluster secret
//!   when there is one; [`replay`]: dropping replayed datagrams;
//! - [`service`]: the thread that drives it over UDP and publishes a
//!   topology snapshot to the shards on every change.

pub mod detector;
pub mod generation;
pub mod gossiper;
pub mod replay;
pub mod service;
pub mod state;
pub mod wire;

/// Most members one node keeps in its view; news of further ids is
/// dropped (and counted), so forged or runaway announcements cannot grow
/// memory without bound.
pub const MEMBERS_MAX: usize = 1024;

pub use gossiper::{Event, GossipSettings, Gossiper, PeerView};
pub use service::GossipStats;
pub use state::{Delta, Digest, EndpointState, NodeMeta, NodeStatus};

#[cfg(test)]
mod tests {
    //! Whole clusters of gossipers in one thread: a simulated network
    //! delivers every message at once, except to nodes that are "dead" or
    //! cut off from each other.

    use std::collections::HashSet;
    use std::net::SocketAddr;

    use super::*;

    const INTERVAL_MS: u64 = 100;

    fn addr(id: u32) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7100 + id as u16 * 10))
    }

    fn meta(id: u32) -> NodeMeta {
        NodeMeta {
            id,
            native_addr: SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16 * 10)),
            peer_addr: addr(id),
            shards: 1,
            rack: format!("r{id}"),
            dc: "dc1".into(),
            weight: 1.0,
            tokens: vec![u64::from(id) << 40],
        }
    }

    struct Sim {
        nodes: Vec<Gossiper>,
        dead: HashSet<u32>,
        cut: HashSet<(u32, u32)>,
        now_ms: u64,
    }

    impl Sim {
        /// Nodes 1..=n, all seeded with node 1.
        fn new(n: u32) -> Sim {
            let mut sim = Sim {
                nodes: Vec::new(),
                dead: HashSet::new(),
                cut: HashSet::new(),
                now_ms: 0,
            };
            for id in 1..=n {
                sim.add(id, 1);
            }
            sim
        }

        fn add(&mut self, id: u32, generation: u64) {
            let g = Gossiper::new(
                "test",
                meta(id),
                NodeStatus::Normal,
                generation,
                GossipSettings {
                    interval_ms: INTERVAL_MS,
                    phi_convict: 8.0,
                    seeds: vec![addr(1)],
                },
            );
            self.nodes.retain(|n| n.id() != id);
            self.nodes.push(g);
        }

        fn id_of(addr: SocketAddr) -> u32 {
            u32::from((addr.port() - 7100) / 10)
        }

        fn blocked(&self, a: u32, b: u32) -> bool {
            self.dead.contains(&a)
                || self.dead.contains(&b)
                || self.cut.contains(&(a, b))
                || self.cut.contains(&(b, a))
        }

        /// Runs `rounds` gossip rounds (each node ticks once per round).
        fn run(&mut self, rounds: usize) {
            for _ in 0..rounds {
                self.now_ms += INTERVAL_MS;
                let ids: Vec<u32> = self.nodes.iter().map(|n| n.id()).collect();
                for id in ids {
                    if self.dead.contains(&id) {
                        continue;
                    }
                    let now = self.now_ms;
                    let out = self.node(id).tick(now);
                    self.deliver(id, out);
                }
            }
        }

        fn deliver(&mut self, from: u32, out: Vec<(SocketAddr, wire::Message)>) {
            let mut queue: Vec<(u32, SocketAddr, wire::Message)> =
                out.into_iter().map(|(to, m)| (from, to, m)).collect();
            let mut hops = 0;
            while let Some((from, to, msg)) = queue.pop() {
                hops += 1;
                assert!(hops < 10_000, "message storm");
                let to_id = Sim::id_of(to);
                if self.blocked(from, to_id) || !self.nodes.iter().any(|n| n.id() == to_id) {
                    continue;
                }
                // Through the codec, as on the wire.
                let hash = self.node(to_id).cluster_hash();
                let msg = wire::decode(hash, &wire::encode(hash, &msg)).expect("round trip");
                let now = self.now_ms;
                let answers = self.node(to_id).receive(addr(from), msg, now);
                queue.extend(answers.into_iter().map(|(t, m)| (to_id, t, m)));
            }
        }

        fn node(&mut self, id: u32) -> &mut Gossiper {
            self.nodes
                .iter_mut()
                .find(|n| n.id() == id)
                .expect("node exists")
        }

        /// (id, up) pairs that node `id` sees, itself included.
        fn sees(&mut self, id: u32) -> Vec<(u32, bool)> {
            self.node(id)
                .view()
                .iter()
                .map(|p| (p.state.meta.id, p.up))
                .collect()
        }
    }

    #[test]
    fn nodes_joining_through_one_seed_all_learn_each_other() {
        let mut sim = Sim::new(5);
        sim.run(10);
        for id in 1..=5 {
            assert_eq!(
                sim.sees(id),
                (1..=5).map(|i| (i, true)).collect::<Vec<_>>(),
                "node {id}"
            );
        }
        sim.add(6, 1);
        sim.run(10);
        for id in 1..=6 {
            assert_eq!(sim.sees(id).len(), 6, "node {id} sees the newcomer");
        }
        let m = sim.node(3).view()[5].state.meta.clone();
        assert_eq!(m, meta(6), "metadata arrives intact");
    }

    #[test]
    fn a_dead_node_is_convicted_within_the_phi_bound_and_revived_when_back() {
        let mut sim = Sim::new(3);
        sim.run(30);
        sim.dead.insert(3);
        let mut rounds = 0;
        while sim.sees(1)[2].1 || sim.sees(2)[2].1 {
            sim.run(1);
            rounds += 1;
            assert!(rounds < 100, "not convicted after {rounds} rounds");
        }
        // phi 8 with a mean interval ≥ 100 ms: at least 1.84 s of silence.
        assert!(rounds >= 18, "convicted after only {rounds} rounds");
        assert_eq!(sim.sees(1)[1], (2, true), "the live node stays up");
        sim.dead.remove(&3);
        sim.run(20);
        assert_eq!(sim.sees(1), vec![(1, true), (2, true), (3, true)]);
        let events = sim.node(1).take_events();
        assert!(events.iter().any(|e| matches!(e, Event::Down(3, ..))));
        assert!(events.contains(&Event::Up(3)));
    }

    #[test]
    fn a_restart_with_a_newer_generation_replaces_the_old_state() {
        let mut sim = Sim::new(3);
        sim.run(10);
        let before = sim.node(1).view()[1].state.heartbeat;
        assert!(before > 5);
        sim.add(2, 2); // restarted: generation 2, heartbeat from 0
        sim.run(10);
        let seen = sim.node(1).view()[1].state.clone();
        assert_eq!(seen.generation, 2);
        assert!(seen.heartbeat < before + 5);
    }

    #[test]
    fn a_partition_heals_and_views_converge() {
        let mut sim = Sim::new(3);
        sim.run(20);
        sim.cut.insert((1, 3));
        sim.cut.insert((2, 3));
        sim.run(60);
        assert_eq!(sim.sees(1), vec![(1, true), (2, true), (3, false)]);
        assert_eq!(sim.sees(3), vec![(1, false), (2, false), (3, true)]);
        sim.cut.clear();
        sim.run(30);
        for id in 1..=3 {
            assert_eq!(
                sim.sees(id),
                vec![(1, true), (2, true), (3, true)],
                "node {id}"
            );
        }
    }

    #[test]
    fn no_flapping_when_rounds_are_steady() {
        let mut sim = Sim::new(4);
        sim.run(2000); // 200 s of steady gossip
        for id in 1..=4 {
            let downs = sim
                .node(id)
                .take_events()
                .into_iter()
                .filter(|e| matches!(e, Event::Down(..)))
                .count();
            assert_eq!(downs, 0, "node {id} convicted a live node");
        }
    }

    #[test]
    fn a_node_removed_while_it_runs_accepts_the_verdict() {
        let mut sim = Sim::new(3);
        sim.run(10);
        sim.cut.insert((1, 3));
        sim.cut.insert((2, 3));
        assert!(sim.node(1).remove(3));
        sim.run(10);
        sim.cut.clear();
        sim.run(10);
        let me = sim
            .node(3)
            .view()
            .into_iter()
            .find(|p| p.state.meta.id == 3);
        assert_eq!(me.map(|p| p.state.status), Some(NodeStatus::Left));
        assert!(sim.node(3).take_events().contains(&Event::RemovedByPeer));
        assert_eq!(sim.node(2).view()[2].state.status, NodeStatus::Left);
    }

    #[test]
    fn status_changes_spread() {
        let mut sim = Sim::new(3);
        sim.run(10);
        sim.node(2).set_status(NodeStatus::Leaving);
        sim.run(10);
        assert_eq!(sim.node(3).view()[1].state.status, NodeStatus::Leaving);
    }
}
