//! The capacity model's arithmetic: from a load (users, online share,
//! notices, followers, peaks, a reconnect storm) and a node shape, the
//! smallest fleet that holds it, which resource decides that, and the Redis
//! primaries its timeline fan-out needs.
//!
//! Invariants:
//! - Figures measured on the 2-vCPU machine are CPU-seconds per unit of work;
//!   a node of C cores is taken to do C times the work of one core (linear
//!   per core). That ignores what more cores share (kernel locks, memory
//!   bandwidth, one NIC's queues), and the measured CPU includes the loopback
//!   receiver's side, which a real network moves to the clients: the two
//!   errors pull opposite ways, and neither is measured here.
//! - A node count fits when every constraint below holds; the resources that
//!   bind are the constraints that fail with one node fewer.

use serde::Serialize;

use super::inputs::Inputs;

/// File descriptors a process keeps for itself (listeners, Redis, logs,
/// `/metrics` scrapes) out of its open-files limit.
const FD_RESERVE: f64 = 1024.0;
/// Bytes in a GiB.
const GIB: f64 = (1u64 << 30) as f64;
/// The largest fleet the model looks for.
const MAX_NODES: u64 = 1_000_000;

/// What the fleet must carry.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    pub users: f64,
    /// Share of users connected at the peak.
    pub online_share: f64,
    pub notices_per_user_day: f64,
    /// Followers per notice, averaged over notices.
    pub followers: f64,
    /// The busiest second's notices over the day's mean.
    pub peak_to_mean: f64,
    /// Share of online users that reconnect after a node loss, at least the
    /// lost node's own share.
    pub storm_share: f64,
    /// Seconds in which they come back.
    pub storm_secs: f64,
    /// `timeline.shards` (docs/timelines.md).
    pub timeline_shards: f64,
}

/// One node of the fleet.
#[derive(Clone, Debug, Serialize)]
pub struct Node {
    pub cores: f64,
    pub memory_gib: f64,
    /// Share of the cores the steady peak may use; the rest absorbs storms.
    pub cpu_headroom: f64,
    /// Share of the memory connections may use.
    pub memory_headroom: f64,
    /// Open-files limit per process (`LimitNOFILE`).
    pub fd_limit: f64,
}

/// The fleet the model proposes.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub online: f64,
    /// Notices per second at the peak.
    pub notices_per_s: f64,
    /// Deliveries per second to online followers at the peak.
    pub deliveries_per_s: f64,
    /// Engine (shard) messages per notice: shards touched by its followers.
    pub shards_per_notice: f64,
    /// Herald's RSS, a channel of its own and the kernel's objects.
    pub bytes_per_conn: f64,
    /// Cores the steady peak needs: pings, deliveries, recipient lists.
    pub steady_cores: f64,
    /// Of which the pings of idle connections.
    pub idle_cores: f64,
    /// Reconnects after the loss of one node.
    pub storm_reconnects: f64,
    /// Cores the storm adds on the nodes that are left, while it lasts.
    pub storm_cores: f64,
    /// "memory" (one process, no Redis) or "redis".
    pub engine: &'static str,
    pub nodes: u64,
    pub processes_per_node: u64,
    pub cores: f64,
    pub memory_gib: f64,
    /// Memory the connections and processes use, fleet-wide.
    pub memory_used_gib: f64,
    /// The constraints that fail with one node fewer; empty for one node.
    pub binds: Vec<&'static str>,
    pub redis: Redis,
}

/// The Redis side of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct Redis {
    /// Shard publishes per second at the peak (one FCALL each).
    pub publishes_per_s: f64,
    /// Pub/sub messages sent to nodes per second.
    pub deliveries_per_s: f64,
    /// Primaries the publishes need (Redis runs commands on one core).
    pub for_publishes: u64,
    /// Primaries the pub/sub deliveries need.
    pub for_deliveries: u64,
    /// 0 on the memory engine.
    pub primaries: u64,
    /// "publishes/s" or "deliveries/s"; empty without Redis.
    pub binds: &'static str,
}

/// One constraint's verdict for a node count.
struct Check {
    name: &'static str,
    fits: bool,
}

impl Plan {
    pub fn new(load: &Load, node: &Node, inputs: &Inputs) -> anyhow::Result<Self> {
        let online = load.users * load.online_share;
        let notices_per_s = load.users * load.notices_per_user_day / 86_400.0 * load.peak_to_mean;
        let deliveries_per_s = notices_per_s * load.followers * load.online_share;
        let shards = load.timeline_shards.max(1.0);
        let shards_per_notice = shards * (1.0 - (1.0 - 1.0 / shards).powf(load.followers));
        let bytes_per_conn = inputs.rss_per_conn.value
            + inputs.channel_per_conn.value
            + inputs.kernel_per_socket.value;
        let idle_cores = online * inputs.idle_cpu.value / 1e6;
        let steady_cores = idle_cores
            + deliveries_per_s * inputs.delivery_cpu.value / 1e6
            + notices_per_s * load.followers * inputs.fanout_cpu.value / 1e6;
        let shape = Shape {
            load,
            node,
            inputs,
            online,
            bytes_per_conn,
            steady_cores,
        };

        // One process on the memory engine if it holds everything, else Redis.
        let (engine, nodes) = if shape.checks(1, Engine::Memory).iter().all(|c| c.fits) {
            (Engine::Memory, 1)
        } else {
            let nodes = (1..=MAX_NODES)
                .find(|&n| shape.checks(n, Engine::Redis).iter().all(|c| c.fits))
                .ok_or_else(|| {
                    anyhow::anyhow!("no fleet of up to {MAX_NODES} nodes holds this load")
                })?;
            (Engine::Redis, nodes)
        };
        let binds = if nodes > 1 {
            shape
                .checks(nodes - 1, engine)
                .into_iter()
                .filter(|c| !c.fits)
                .map(|c| c.name)
                .collect()
        } else if engine == Engine::Redis {
            // One node, but more than one process (or storms the memory
            // engine's single process cannot take).
            shape
                .checks(1, Engine::Memory)
                .into_iter()
                .filter(|c| !c.fits)
                .map(|c| c.name)
                .collect()
        } else {
            Vec::new()
        };

        let storm_reconnects = shape.storm_reconnects(nodes);
        let storm_cores = storm_reconnects * engine.reconnect_cpu(inputs) / 1e6 / load.storm_secs;
        let processes_per_node = shape.processes(nodes);
        let redis = match engine {
            Engine::Memory => Redis {
                publishes_per_s: 0.0,
                deliveries_per_s: 0.0,
                for_publishes: 0,
                for_deliveries: 0,
                primaries: 0,
                binds: "",
            },
            Engine::Redis => {
                let publishes_per_s = notices_per_s * shards_per_notice;
                let reach = inputs.nodes_per_shard_message.value.min(nodes as f64);
                let deliveries_per_s = publishes_per_s * reach;
                let for_publishes =
                    (publishes_per_s * inputs.redis_publish_cpu.value / 1e6 / node.cpu_headroom)
                        .ceil() as u64;
                let for_deliveries = (deliveries_per_s
                    / (inputs.redis_deliveries.value * node.cpu_headroom))
                    .ceil() as u64;
                Redis {
                    publishes_per_s,
                    deliveries_per_s,
                    for_publishes,
                    for_deliveries,
                    primaries: for_publishes.max(for_deliveries).max(1),
                    binds: if for_publishes >= for_deliveries {
                        "publishes/s"
                    } else {
                        "deliveries/s"
                    },
                }
            }
        };
        Ok(Self {
            online,
            notices_per_s,
            deliveries_per_s,
            shards_per_notice,
            bytes_per_conn,
            steady_cores,
            idle_cores,
            storm_reconnects,
            storm_cores,
            engine: engine.name(),
            nodes,
            processes_per_node,
            cores: nodes as f64 * node.cores,
            memory_gib: nodes as f64 * node.memory_gib,
            memory_used_gib: shape.memory(nodes) / GIB,
            binds,
            redis,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Memory,
    Redis,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Memory => "memory",
            Engine::Redis => "redis",
        }
    }

    /// A reconnect on Redis reads history from Redis and subscribes
    /// upstream; on the memory engine it does neither.
    fn reconnect_cpu(self, inputs: &Inputs) -> f64 {
        match self {
            Engine::Memory => inputs.reconnect_cpu_memory.value,
            Engine::Redis => inputs.reconnect_cpu_redis.value,
        }
    }
}

/// The load and node, with what the constraints share.
struct Shape<'a> {
    load: &'a Load,
    node: &'a Node,
    inputs: &'a Inputs,
    online: f64,
    bytes_per_conn: f64,
    steady_cores: f64,
}

impl Shape<'_> {
    /// Processes per node: connections over what one open-files limit holds.
    fn processes(&self, nodes: u64) -> u64 {
        let per_process = (self.node.fd_limit - FD_RESERVE).max(1.0);
        ((self.online / nodes as f64 / per_process).ceil() as u64).max(1)
    }

    /// Bytes the connections and the processes of `nodes` nodes use.
    fn memory(&self, nodes: u64) -> f64 {
        self.online * self.bytes_per_conn
            + (nodes * self.processes(nodes)) as f64 * self.inputs.process_rss.value * 1e6
    }

    /// A node loss sends its own share of the online users, or the storm
    /// share if that is larger, back to the others (on one node: a restart).
    fn storm_reconnects(&self, nodes: u64) -> f64 {
        self.online * self.load.storm_share.max(1.0 / nodes as f64).min(1.0)
    }

    fn checks(&self, nodes: u64, engine: Engine) -> Vec<Check> {
        let n = nodes as f64;
        let node_bytes = self.node.memory_gib * GIB;
        let left = (n - 1.0).max(1.0);
        let storm_cores = self.storm_reconnects(nodes) * engine.reconnect_cpu(self.inputs)
            / 1e6
            / self.load.storm_secs;
        vec![
            Check {
                name: "memory for connections",
                fits: self.memory(nodes) <= n * node_bytes * self.node.memory_headroom,
            },
            Check {
                // The nodes that are left hold everyone, using all their
                // memory; one node is restarted, not lost.
                name: "memory after a node loss",
                fits: nodes == 1
                    || self.online * self.bytes_per_conn
                        + left * self.processes(nodes) as f64 * self.inputs.process_rss.value * 1e6
                        <= left * node_bytes,
            },
            Check {
                name: "CPU for deliveries",
                fits: self.steady_cores <= n * self.node.cores * self.node.cpu_headroom,
            },
            Check {
                // The storm may use the headroom, all of the cores that are left.
                name: "CPU for a reconnect storm",
                fits: self.steady_cores + storm_cores <= left * self.node.cores,
            },
            Check {
                // Several processes on one node share its port through Redis.
                name: "file descriptors per process",
                fits: engine == Engine::Redis || self.processes(nodes) == 1,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inputs::{Input, Status};

    fn input(value: f64) -> Input {
        Input {
            what: "test",
            value,
            unit: "",
            source: String::new(),
            status: Status::Measured,
        }
    }

    /// Round figures, so that the expected plan can be worked out by hand.
    fn inputs() -> Inputs {
        Inputs {
            rss_per_conn: input(1000.0),
            channel_per_conn: input(0.0),
            kernel_per_socket: input(3000.0),
            process_rss: input(0.0),
            idle_cpu: input(1.0),
            delivery_cpu: input(10.0),
            fanout_cpu: input(1.0),
            nodes_per_shard_message: input(1.0),
            reconnect_cpu_redis: input(200.0),
            reconnect_cpu_memory: input(100.0),
            redis_publish_cpu: input(25.0),
            redis_deliveries: input(500_000.0),
        }
    }

    fn node() -> Node {
        Node {
            cores: 16.0,
            memory_gib: 32.0,
            cpu_headroom: 0.5,
            memory_headroom: 0.5,
            fd_limit: 1_001_024.0,
        }
    }

    fn load(users: f64) -> Load {
        Load {
            users,
            online_share: 0.1,
            notices_per_user_day: 0.864,
            followers: 100.0,
            peak_to_mean: 2.0,
            storm_share: 0.1,
            storm_secs: 10.0,
            timeline_shards: 1.0,
        }
    }

    /// 10^8 users, worked out by hand:
    /// - online 10^7; 4,000 B each = 4e10 B = 37.25 GiB, over 16 GiB usable
    ///   per node (50 % of 32): 3 nodes for memory;
    /// - notices 10^8 × 0.864 / 86,400 × 2 = 2,000/s; deliveries
    ///   2,000 × 100 × 0.1 = 20,000/s;
    /// - steady CPU: pings 10^7 × 1 µs = 10 cores, deliveries 20,000 × 10 µs
    ///   = 0.2, recipient lists 2,000 × 100 × 1 µs = 0.2: 10.4 cores, over
    ///   8 usable per node: 2 nodes;
    /// - the storm with 3 nodes: a third of 10^7 (more than the 10 % share)
    ///   × 200 µs ÷ 10 s = 66.7 cores, + 10.4 on 2 nodes left (32 cores):
    ///   no. With 4: 2.5M × 200 µs ÷ 10 = 50 + 10.4 on 3 × 16 = 48: no.
    ///   With 5: 2M → 40 + 10.4 = 50.4 on 64: yes. 5 nodes, the storm binds;
    /// - 2M connections per node, 1,000,000 per process (the open-files
    ///   limit less 1,024 kept back): 2 processes per node;
    /// - one shard: one publish per notice, 2,000/s × 25 µs = 0.05 cores,
    ///   over 0.5: 1 primary; deliveries 2,000/s over 250,000: 1.
    #[test]
    fn a_hand_computed_fleet() {
        let plan = Plan::new(&load(1e8), &node(), &inputs()).unwrap();
        let close = |got: f64, want: f64| {
            assert!(
                (got - want).abs() < 1e-6 * want.abs().max(1.0),
                "{got} ≠ {want}"
            )
        };
        close(plan.online, 1e7);
        close(plan.notices_per_s, 2000.0);
        close(plan.deliveries_per_s, 20_000.0);
        close(plan.shards_per_notice, 1.0);
        close(plan.bytes_per_conn, 4000.0);
        close(plan.steady_cores, 10.4);
        close(plan.idle_cores, 10.0);
        assert_eq!(plan.engine, "redis");
        assert_eq!(plan.nodes, 5);
        assert_eq!(plan.binds, vec!["CPU for a reconnect storm"]);
        close(plan.storm_reconnects, 2e6);
        close(plan.storm_cores, 40.0);
        assert_eq!(plan.processes_per_node, 2);
        close(plan.cores, 80.0);
        close(plan.memory_gib, 160.0);
        close(plan.redis.publishes_per_s, 2000.0);
        assert_eq!(plan.redis.primaries, 1);
        assert_eq!(plan.redis.binds, "publishes/s");
    }

    /// 1,000 users: 100 online on one process of the memory engine, no Redis,
    /// nothing binds.
    #[test]
    fn a_small_site_is_one_process_without_redis() {
        let plan = Plan::new(&load(1000.0), &node(), &inputs()).unwrap();
        assert_eq!(plan.engine, "memory");
        assert_eq!(plan.nodes, 1);
        assert_eq!(plan.redis.primaries, 0);
        assert!(plan.binds.is_empty());
    }

    /// Shards touched: S × (1 − (1 − 1/S)^F). With 1024 shards and 100
    /// followers, 95.32; with 1,000,000 followers, every shard.
    #[test]
    fn shards_touched_per_notice() {
        let mut load = load(1e6);
        load.timeline_shards = 1024.0;
        let plan = Plan::new(&load, &node(), &inputs()).unwrap();
        assert!(
            (plan.shards_per_notice - 95.32).abs() < 0.01,
            "{}",
            plan.shards_per_notice
        );
        load.followers = 1e6;
        let plan = Plan::new(&load, &node(), &inputs()).unwrap();
        assert!((plan.shards_per_notice - 1024.0).abs() < 1e-6);
    }

    /// A process holds what its open-files limit allows: 10^7 online on
    /// 5 nodes with 100,000 descriptors each (98,976 usable) is 2M per node,
    /// 21 processes.
    #[test]
    fn processes_follow_the_open_files_limit() {
        let mut node = node();
        node.fd_limit = 100_000.0;
        let plan = Plan::new(&load(1e8), &node, &inputs()).unwrap();
        assert_eq!(plan.nodes, 5);
        assert_eq!(plan.processes_per_node, 21);
    }
}
