//! The whole network under faults, on the deterministic simulator
//! (`peershare::core::sim`): per-message latency 1–200 ms, 10 % loss,
//! duplication, reordering, partitions that heal, crashes and restarts from
//! the last persisted metadata, and transfers that stall, reset or deliver
//! corrupt bytes.
//!
//! Safety (`Sim::check_invariants`) is checked as the run goes, in two
//! tiers: inside the simulator after every event, the per-peer table
//! bounds (peers, files, seen GOSSIP ids), no GOSSIP id forwarded twice,
//! and no local copy removed except by its owner's DELETE; the whole
//! check (held files against their bytes and catalog sizes, holders per
//! file, copies the catalog forgot) every `check_every` of simulated time
//! (100 ms in the short tests, 500 ms in the sweep), because it walks every
//! catalog of every peer. A violation of the per-event tier is recorded
//! with its time and reported by the next full check. Liveness is checked
//! after the last partition heals.
//!
//! `PEERSHARE_TEST_SEED=<n>` runs one seed (and replays a failure exactly);
//! `seed_sweep` runs `PEERSHARE_SIM_SEEDS` seeds (default 16, so the
//! README's `cargo test` answers in minutes; `.ci/run`'s long step runs
//! 200 in release) of
//! `PEERSHARE_SIM_MINUTES` simulated minutes (default 10) on
//! `PEERSHARE_SIM_PEERS` peers (default 100) with the protocol's timers
//! (`PEERSHARE_SIM_GOSSIP_MS`, default 30 000; `PEERSHARE_SIM_TIMEOUT_MS`,
//! default two intervals) at `PEERSHARE_SIM_LOSS_PERMILLE` loss (default
//! 100, i.e. 10 %). `PEERSHARE_SIM_MEMBER_INTERVALS` and
//! `PEERSHARE_SIM_FILE_INTERVALS` override the liveness bounds (to measure
//! a distribution without failing).

use peershare::core::sim::{self, Sim, SimConfig};
use peershare::core::{Command, Time};
use peershare::ids::FileId;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|s| {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer"))
    })
}

fn seeds(default: &[u64]) -> Vec<u64> {
    match env_u64("PEERSHARE_TEST_SEED") {
        Some(s) => vec![s],
        None => default.to_vec(),
    }
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs `test` for every seed; a failure re-panics naming the seed.
fn for_each_seed(default: &[u64], test_name: &str, test: impl Fn(u64)) {
    for seed in seeds(default) {
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| test(seed))) {
            panic!(
                "failed with seed {seed}; replay: PEERSHARE_TEST_SEED={seed} cargo test --test sim_faults {test_name}: {}",
                panic_text(e)
            );
        }
    }
}

/// The faulty network: 10 % loss, 5 % duplicates, faults on a quarter of
/// the fetch attempts, timers scaled to a `gossip` interval (the peer
/// timeout is four of them, as in tests/simulation.rs; the sweep uses the
/// protocol's timers instead, see `Sweep`).
fn faulty(peers: usize, seed: u64, gossip: Duration) -> SimConfig {
    SimConfig {
        peers,
        seed,
        latency_ms: (1, 200),
        loss: 0.10,
        dup: 0.05,
        gossip_interval: gossip,
        peer_timeout: gossip * 4,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        stall: 0.10,
        reset: 0.10,
        corrupt: 0.05,
        bandwidth: 1_000_000,
        well_known: 2,
        ..SimConfig::default()
    }
}

/// The longest one fetch attempt can take: connect timeout, a round trip,
/// the whole file, and the idle timeout of a stall.
fn per_source_timeout(sim: &Sim, len: u64) -> Duration {
    let c = sim.config();
    let transfer = ms(len * 1000 / c.bandwidth.max(1));
    c.connect_timeout + ms(2 * c.latency_ms.1) + transfer + c.idle_timeout
}

/// Files a running peer holds and may serve, with the running peers holding each.
fn live_files(sim: &Sim) -> BTreeMap<FileId, Vec<usize>> {
    let mut out: BTreeMap<FileId, Vec<usize>> = BTreeMap::new();
    for i in sim.running() {
        let p = sim.peer(i);
        for (id, _) in p.catalog().iter() {
            // An unverified copy is never listed or served, so no one can
            // learn it from its holder: only servable copies are live.
            if p.servable_copy(id).is_some() {
                out.entry(id.clone()).or_default().push(i);
            }
        }
    }
    out
}

/// What keeps the live network from full knowledge (at most `max` items):
/// membership gaps if `members`, unknown live files if `files`.
fn gaps_of(sim: &Sim, max: usize, members: bool, files: bool) -> Vec<String> {
    let live = if files {
        live_files(sim)
    } else {
        BTreeMap::new()
    };
    let running = sim.running();
    let mut out = Vec::new();
    for &i in &running {
        let p = sim.peer(i);
        for &j in &running {
            if members && i != j && !p.members().contains(&sim::peer_id(j)) {
                out.push(format!("p{i} does not track p{j}"));
            }
        }
        for (f, held_by) in &live {
            if p.catalog().get(f).is_none() {
                out.push(format!(
                    "p{i} does not know file {} (held by {held_by:?})",
                    f.short()
                ));
            }
        }
        if out.len() >= max {
            break;
        }
    }
    out.truncate(max);
    out
}

/// A `get` in flight and when it must have ended.
struct PendingGet {
    peer: usize,
    file: FileId,
    /// When it began.
    started: Time,
    /// The longest one source may take.
    per_source: Duration,
    deadline: Time,
    bound: Duration,
}

impl PendingGet {
    /// Its bound once it has tried `tried` sources: a holder learnt while
    /// it ran is tried too, within the same per-source bound.
    fn stretched(&self, tried: usize) -> (Time, Duration) {
        let bound = self.per_source * tried.max(1) as u32 + ms(1000);
        if bound > self.bound {
            (self.started.plus(bound), bound)
        } else {
            (self.deadline, self.bound)
        }
    }
}

/// A run under a random fault schedule, with its checks.
struct Run {
    sim: Sim,
    rng: SmallRng,
    gets: Vec<PendingGet>,
    gets_done: u64,
    next_file: u64,
    check_every: Duration,
}

impl Run {
    /// Every peer started at time zero (their gossip rounds in step).
    fn new(cfg: SimConfig, check_every: Duration) -> Self {
        let mut run = Self::idle(cfg, check_every);
        run.sim.start_all();
        run
    }

    /// Peers started at random moments of the first gossip interval, as
    /// real peers are: their rounds are spread over the interval, so the
    /// last heal falls at a random point of each peer's cycle (with every
    /// round in step, a heal just after a round waited a whole interval).
    fn staggered(cfg: SimConfig, check_every: Duration) -> Self {
        let mut run = Self::idle(cfg, check_every);
        let g = run.sim.config().gossip_interval.as_millis() as u64;
        let mut order: Vec<(u64, usize)> = (0..run.sim.len())
            .map(|i| (run.rng.gen_range(0..g.max(1)), i))
            .collect();
        order.sort();
        for (at, i) in order {
            run.sim.run_until(Time(at));
            run.sim.start(i);
        }
        run
    }

    fn idle(cfg: SimConfig, check_every: Duration) -> Self {
        let seed = cfg.seed;
        let mut sim = Sim::new(cfg);
        for i in (1..sim.len()).step_by(3) {
            sim.add_local_file(i, &format!("f{i}-0.bin"), 1_000 + 37 * i as u64);
        }
        Self {
            sim,
            rng: SmallRng::seed_from_u64(seed ^ 0x5ca1_ab1e),
            gets: Vec::new(),
            gets_done: 0,
            next_file: 1,
            check_every,
        }
    }

    /// Runs `d`, checking safety every `check_every` and the get bounds.
    fn run_for(&mut self, d: Duration) {
        let end = self.sim.now().plus(d);
        while self.sim.now() < end {
            let step = self.check_every.min(end.since(self.sim.now()));
            self.sim.run_for(step);
            self.check();
        }
    }

    fn check(&mut self) {
        if let Err(e) = self.sim.check_invariants() {
            panic!("safety violated at t={} ms:\n{e}", self.sim.now().0);
        }
        let now = self.sim.now();
        let sim = &self.sim;
        let mut done = 0;
        self.gets.retain(|g| {
            let running = sim.downloads_of(g.peer, &g.file);
            if !running {
                done += 1;
                return false;
            }
            let p = sim.peer(g.peer);
            let tried = p
                .downloads()
                .by_file(&g.file)
                .and_then(|t| p.downloads().get(t))
                .map_or(0, |d| d.failures.len() + usize::from(d.current.is_some()));
            let (deadline, bound) = g.stretched(tried);
            assert!(
                now <= deadline,
                "p{}'s get of {} has not ended {} ms after its bound of {} ms",
                g.peer,
                g.file.short(),
                now.since(deadline).as_millis(),
                bound.as_millis()
            );
            true
        });
        self.gets_done += done;
    }

    /// For a failure message: what the peers nobody tracks track.
    fn who_is_missing(&self) -> String {
        let running = self.sim.running();
        let mut out = String::new();
        for &j in &running {
            let id = sim::peer_id(j);
            let unknown_to = running
                .iter()
                .filter(|&&i| i != j && !self.sim.peer(i).members().contains(&id))
                .count();
            if unknown_to * 2 > running.len() {
                let tracks: Vec<String> = self
                    .sim
                    .peer(j)
                    .members()
                    .all()
                    .iter()
                    .map(|(p, s)| format!("{p}@{}", s.addr))
                    .collect();
                out.push_str(&format!(
                    "p{j} is unknown to {unknown_to} peers and tracks {tracks:?}; "
                ));
            }
        }
        out
    }

    fn live(&self) -> Vec<usize> {
        self.sim.running()
    }

    /// `peer` runs `get` on a file it does not hold; the get must end
    /// within (sources x per-source timeout) + a margin.
    fn get(&mut self, peer: usize, file: &FileId) {
        let p = self.sim.peer(peer);
        let Some(e) = p.catalog().get(file) else {
            return;
        };
        if e.local.is_some() || p.downloads().by_file(file).is_some() {
            return;
        }
        let sources = e.holders.iter().filter(|h| p.members().contains(h)).count();
        let len = self.sim.file_size(file).unwrap_or(0);
        let per_source = per_source_timeout(&self.sim, len);
        let bound = per_source * sources.max(1) as u32 + ms(1000);
        self.sim.command(
            peer,
            Command::Get {
                file: file.0.clone(),
                dest: None,
                force: false,
            },
        );
        if self.sim.downloads_of(peer, file) {
            self.gets.push(PendingGet {
                peer,
                file: file.clone(),
                started: self.sim.now(),
                per_source,
                deadline: self.sim.now().plus(bound),
                bound,
            });
        }
    }

    /// One random fault or user action.
    fn random_action(&mut self, allow_partition: bool) {
        let n = self.sim.len();
        let live = self.live();
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=14 if allow_partition => {
                let mut all: Vec<usize> = (0..n).collect();
                all.shuffle(&mut self.rng);
                let k = self.rng.gen_range(1..n);
                let (a, b) = all.split_at(k);
                self.sim.partition(a, b);
            }
            15..=24 => self.sim.heal(),
            25..=39 => {
                // Crash a running peer (never the last few).
                if live.len() > n / 2 {
                    let &i = live.choose(&mut self.rng).unwrap();
                    self.sim.crash(i);
                    self.gets.retain(|g| g.peer != i);
                }
            }
            40..=54 => {
                let crashed: Vec<usize> = (0..n)
                    .filter(|&i| self.sim.state(i) == sim::NodeState::Crashed)
                    .collect();
                if let Some(&i) = crashed.choose(&mut self.rng) {
                    self.sim.restart(i);
                }
            }
            55..=64 => {
                let &i = live.choose(&mut self.rng).unwrap();
                let len = self.rng.gen_range(1..200_000);
                let name = format!("f{i}-{}.bin", self.next_file);
                self.next_file += 1;
                self.sim.add_local_file(i, &name, len);
            }
            65..=69 => {
                // An owner deletes one of its files.
                let &i = live.choose(&mut self.rng).unwrap();
                let me = sim::peer_id(i);
                let own: Vec<FileId> = self
                    .sim
                    .peer(i)
                    .catalog()
                    .iter()
                    .filter(|(_, e)| e.record.file_owner == me)
                    .map(|(id, _)| id.clone())
                    .collect();
                if let Some(f) = own.choose(&mut self.rng) {
                    self.sim.command(i, Command::Delete { file: f.0.clone() });
                }
            }
            _ => {
                let &i = live.choose(&mut self.rng).unwrap();
                let known: Vec<FileId> = self
                    .sim
                    .peer(i)
                    .catalog()
                    .iter()
                    .filter(|(_, e)| e.local.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                if let Some(f) = known.choose(&mut self.rng).cloned() {
                    self.get(i, &f);
                }
            }
        }
    }

    /// Random faults for `d`, one every 0.5–3 gossip intervals.
    fn chaos(&mut self, d: Duration) {
        let g = self.sim.config().gossip_interval;
        self.chaos_every(d, g);
    }

    /// Random faults for `d`, one every 0.5–3 `unit`s.
    fn chaos_every(&mut self, d: Duration, unit: Duration) {
        let end = self.sim.now().plus(d);
        let g = unit;
        while self.sim.now() < end {
            let wait = g.mul_f64(self.rng.gen_range(0.5..3.0));
            let wait = wait.min(end.since(self.sim.now()));
            self.run_for(wait);
            if self.sim.now() < end {
                self.random_action(true);
            }
        }
    }

    /// The last heal: partitions removed, every crashed peer but a few
    /// (never p0 or p1, the well-known peers) restarted. Then every live peer must
    /// track every other within `member_intervals` gossip intervals and
    /// know every live file within `file_intervals`; returns how long each
    /// took.
    fn final_heal_and_converge(
        &mut self,
        member_intervals: f64,
        file_intervals: f64,
    ) -> (Duration, Duration) {
        self.sim.heal();
        let n = self.sim.len();
        let crashed: Vec<usize> = (0..n)
            .filter(|&i| self.sim.state(i) == sim::NodeState::Crashed)
            .collect();
        for (k, &i) in crashed.iter().enumerate() {
            // Leave one in four down for good: they must be forgotten, not
            // waited for.
            if i < self.sim.config().well_known || k % 4 != 3 {
                self.sim.restart(i);
            }
        }
        let healed = self.sim.now();
        let g = self.sim.config().gossip_interval;
        let (member_bound, file_bound) = (g.mul_f64(member_intervals), g.mul_f64(file_intervals));
        let (mut members_at, mut files_at) = (None, None);
        loop {
            let since = self.sim.now().since(healed);
            if members_at.is_none() && gaps_of(&self.sim, 1, true, false).is_empty() {
                members_at = Some(since);
            }
            if files_at.is_none() && gaps_of(&self.sim, 1, false, true).is_empty() {
                files_at = Some(since);
            }
            if let (Some(m), Some(f)) = (members_at, files_at) {
                return (m, f);
            }
            let late = (members_at.is_none() && since >= member_bound)
                || (files_at.is_none() && since >= file_bound);
            if late && std::env::var("PEERSHARE_SIM_DUMP").is_ok() {
                for l in self.sim.log() {
                    eprintln!("{l}");
                }
            }
            assert!(
                members_at.is_some() || since < member_bound,
                "no full membership {member_intervals} gossip intervals after the last heal: {:?}; {}",
                gaps_of(&self.sim, 10, true, false),
                self.who_is_missing()
            );

            assert!(
                files_at.is_some() || since < file_bound,
                "live files still unknown {file_intervals} gossip intervals after the last heal: {:?}",
                gaps_of(&self.sim, 10, false, true)
            );
            // Convergence is sampled 50 times a gossip interval (100 ms at
            // 5 s, 600 ms at 30 s): finer costs O(peers^2) per sample.
            self.sim.run_for((g / 50).max(ms(100)));
            self.check();
        }
    }
}

/// Liveness bounds after the last heal, in gossip intervals, for the
/// sweep's 10 % loss with the protocol's timers (gossip 30 s, peer timeout
/// 60 s): the issue's 3. Measured (see README, "Simulated network under
/// faults"), with the core's catch-up after a heal, the answer to a
/// repeated GOSSIP id, the five retransmission passes of each round's
/// GOSSIP (`core::Timer::Retransmit`) and, while a peer tracks no one,
/// those passes to the well-known peers:
///
/// - the sweep's 200 seeds: membership and files both worst 2.88 (seed 18:
///   one pair whose five floods after the heal all missed the other; with
///   the protocol's fanout of 3 a flood misses a given live peer about one
///   time in twenty at 10 % loss: 4.9 % over that seed's 330 floods after
///   the heal), p99 2.14;
/// - 1 000 seeds: membership worst 2.96, files 2.98, none over 3.
///
/// With three passes one seed of 1 000 took 3.26 intervals to know every
/// live file (730: a pair found late whose first reply was lost after the
/// last pass). Before the passes to the well-known peers the worst of 200
/// (92) took 3.02 and the bounds were 3.5: a peer cut off from everyone
/// tracked no one after the heal, and both GOSSIPs of its next round, to
/// the two well-known peers, were lost. Before the retransmission passes:
/// membership worst 5.48, files 6.24.
const MEMBER_INTERVALS: f64 = 3.0;

/// See [`MEMBER_INTERVALS`].
const FILE_INTERVALS: f64 = 3.0;

/// The sweep's gossip interval: the protocol's 30 s. 10 simulated minutes
/// are then 20 rounds (about 500 000 events per 100-peer seed) instead of
/// 120 at the compressed 5 s, and the peer timeout keeps the protocol's
/// ratio of two intervals, false expiries included.
const SWEEP_GOSSIP_MS: u64 = 30_000;

/// The sweep's peer timeout, in gossip intervals (the protocol's 60 s).
const SWEEP_TIMEOUT_INTERVALS: u32 = 2;

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().map(|s| {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

fn intervals() -> (f64, f64) {
    (
        env_f64("PEERSHARE_SIM_MEMBER_INTERVALS").unwrap_or(MEMBER_INTERVALS),
        env_f64("PEERSHARE_SIM_FILE_INTERVALS").unwrap_or(FILE_INTERVALS),
    )
}

#[test]
fn hundred_peers_converge_after_partitions_heal() {
    for_each_seed(
        &[1, 2],
        "hundred_peers_converge_after_partitions_heal",
        |seed| {
            let mut cfg = faulty(100, seed, Duration::from_secs(5));
            cfg.record = false;
            let mut run = Run::new(cfg, ms(100));
            run.run_for(Duration::from_secs(10));
            run.chaos(Duration::from_secs(100));
            let (m, f) = run.final_heal_and_converge(intervals().0, intervals().1);
            eprintln!(
            "100 peers, seed {seed}: full membership {} ms and every live file known {} ms after the last heal; {} events, stats {:?}",
            m.as_millis(),
            f.as_millis(),
            run.sim.stats().events,
            run.sim.stats()
        );
            run.run_for(Duration::from_secs(2));
        },
    );
}

#[test]
fn gets_end_within_their_bound_under_transfer_faults() {
    for_each_seed(
        &[1, 7, 0x5eed_cafe],
        "gets_end_within_their_bound_under_transfer_faults",
        |seed| {
            let mut cfg = faulty(12, seed, Duration::from_secs(1));
            cfg.loss = 0.0;
            cfg.stall = 0.3;
            cfg.reset = 0.3;
            cfg.corrupt = 0.2;
            let mut run = Run::new(cfg, ms(100));
            // Several holders per file: each file spreads to a few peers.
            let files: Vec<FileId> = run
                .sim
                .peer(1)
                .catalog()
                .iter()
                .map(|(id, _)| id.clone())
                .collect();
            run.run_for(Duration::from_secs(5));
            let all: Vec<FileId> = live_files(&run.sim).into_keys().collect();
            assert!(!all.is_empty() && !files.is_empty());
            for round in 0..6 {
                for i in 0..run.sim.len() {
                    if let Some(f) = all.get((i + round) % all.len()) {
                        run.get(i, f);
                    }
                }
                run.run_for(Duration::from_secs(3));
            }
            run.run_for(Duration::from_secs(30));
            assert!(run.gets.is_empty(), "gets still running");
            assert!(run.gets_done >= 20, "only {} gets ran", run.gets_done);
            assert!(run.sim.stats().transfer_faults > 5, "{:?}", run.sim.stats());
        },
    );
}

/// Seeds of the sweep in a plain `cargo test`: enough to catch a broken
/// policy in under a minute; the distribution's tail needs the long run.
const DEFAULT_SWEEP_SEEDS: u64 = 8;

/// How the sweep runs: from the environment, with the CI defaults.
#[derive(Clone, Copy, Debug)]
struct Sweep {
    peers: usize,
    minutes: u64,
    gossip: Duration,
    peer_timeout: Duration,
    loss: f64,
}

impl Sweep {
    fn from_env() -> Self {
        let gossip = ms(env_u64("PEERSHARE_SIM_GOSSIP_MS").unwrap_or(SWEEP_GOSSIP_MS));
        Self {
            peers: env_u64("PEERSHARE_SIM_PEERS").unwrap_or(100) as usize,
            minutes: env_u64("PEERSHARE_SIM_MINUTES").unwrap_or(10),
            gossip,
            peer_timeout: env_u64("PEERSHARE_SIM_TIMEOUT_MS")
                .map_or(gossip * SWEEP_TIMEOUT_INTERVALS, ms),
            loss: env_u64("PEERSHARE_SIM_LOSS_PERMILLE").map_or(0.10, |p| p as f64 / 1000.0),
        }
    }
}

/// One seed of the sweep: random faults for 80 % of the run, the last heal,
/// convergence, then quiet to the end. Returns (events, (membership, files)
/// convergence times).
fn sweep_one(seed: u64, sw: Sweep) -> Outcome {
    let mut cfg = faulty(sw.peers, seed, sw.gossip);
    cfg.peer_timeout = sw.peer_timeout;
    cfg.loss = sw.loss;
    cfg.record = std::env::var("PEERSHARE_SIM_DUMP").is_ok();
    let total = Duration::from_secs(60 * sw.minutes);
    let mut run = Run::staggered(cfg, ms(500));
    // Faults come at a fixed pace (one every 2.5-15 s of simulated time)
    // whatever the gossip interval, so a run sees the same number of
    // crashes, partitions and gets at a 30 s interval as at 5 s.
    run.chaos_every(total.mul_f64(0.8), Duration::from_secs(5));
    let took = run.final_heal_and_converge(intervals().0, intervals().1);
    let rest = total.saturating_sub(Duration::from_millis(run.sim.now().0));
    run.run_for(rest);
    run.check();
    (run.sim.stats().events, took)
}

type Outcome = (u64, (Duration, Duration));

/// "worst W, p99 P, median M intervals; K of N seeds over 3; slowest:
/// seed S (T), ..." for a list of (seed, convergence time).
fn distribution(mut v: Vec<(u64, Duration)>, gossip: Duration) -> String {
    if v.is_empty() {
        return "no data".into();
    }
    v.sort_by_key(|&(seed, d)| (d, seed));
    let iv = |d: Duration| d.as_secs_f64() / gossip.as_secs_f64();
    let at = |q: f64| iv(v[((v.len() - 1) as f64 * q).round() as usize].1);
    let over = v.iter().filter(|(_, d)| iv(*d) > 3.0).count();
    let slowest: Vec<String> = v
        .iter()
        .rev()
        .take(3)
        .map(|&(seed, d)| format!("seed {seed} ({:.2})", iv(d)))
        .collect();
    format!(
        "worst {:.2}, p99 {:.2}, median {:.2} intervals; {over} of {} seeds over 3; slowest: {}",
        at(1.0),
        at(0.99),
        at(0.5),
        v.len(),
        slowest.join(", ")
    )
}

#[test]
fn seed_sweep() {
    if env_u64("PEERSHARE_SIM_SEEDS").is_none() && env_u64("PEERSHARE_TEST_SEED").is_none() {
        println!(
            "seed_sweep: {DEFAULT_SWEEP_SEEDS} seeds (the quick run); the long run is \
             PEERSHARE_SIM_SEEDS=200 cargo test --release --test sim_faults seed_sweep"
        );
    }
    let seeds: Vec<u64> = match env_u64("PEERSHARE_TEST_SEED") {
        Some(s) => vec![s],
        None => (1..=env_u64("PEERSHARE_SIM_SEEDS").unwrap_or(DEFAULT_SWEEP_SEEDS)).collect(),
    };
    let sw = Sweep::from_env();
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(u64, Result<Outcome, String>)>> = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(k) else {
                    break;
                };
                let r = catch_unwind(AssertUnwindSafe(|| sweep_one(seed, sw))).map_err(panic_text);
                results.lock().unwrap().push((seed, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let events: u64 = results
        .iter()
        .filter_map(|r| r.1.as_ref().ok())
        .map(|r| r.0)
        .sum();
    let ok = || {
        results
            .iter()
            .filter_map(|r| r.1.as_ref().ok().map(|o| (r.0, o)))
    };
    let failed: Vec<&(u64, Result<Outcome, String>)> =
        results.iter().filter(|r| r.1.is_err()).collect();
    eprintln!(
        "sim sweep: {} seeds x {} simulated min x {} peers, gossip {} ms, peer timeout {} ms, loss {:.1} %: {events} events, {} failing seeds; {:.1} s wall\n  after the last heal, full membership: {}\n  every live file known: {}",
        seeds.len(),
        sw.minutes,
        sw.peers,
        sw.gossip.as_millis(),
        sw.peer_timeout.as_millis(),
        sw.loss * 100.0,
        failed.len(),
        started.elapsed().as_secs_f64(),
        distribution(ok().map(|(s, o)| (s, o.1 .0)).collect(), sw.gossip),
        distribution(ok().map(|(s, o)| (s, o.1 .1)).collect(), sw.gossip),
    );
    if let Some((seed, Err(e))) = failed.first() {
        let all: Vec<u64> = failed.iter().map(|f| f.0).collect();
        panic!(
            "{} seeds failed: {all:?}\nfirst: seed {seed}; replay: PEERSHARE_TEST_SEED={seed} PEERSHARE_SIM_MINUTES={} PEERSHARE_SIM_PEERS={} PEERSHARE_SIM_GOSSIP_MS={} PEERSHARE_SIM_TIMEOUT_MS={} PEERSHARE_SIM_LOSS_PERMILLE={} cargo test --test sim_faults seed_sweep\n{e}",
            all.len(),
            sw.minutes,
            sw.peers,
            sw.gossip.as_millis(),
            sw.peer_timeout.as_millis(),
            (sw.loss * 1000.0).round() as u64,
        );
    }
}

fn fault_log(seed: u64) -> Vec<String> {
    let mut run = Run::new(faulty(20, seed, Duration::from_secs(1)), ms(100));
    run.chaos(Duration::from_secs(30));
    run.final_heal_and_converge(10.0, 20.0);
    run.sim.log().to_vec()
}

#[test]
fn same_seed_gives_identical_event_logs() {
    for_each_seed(&[1, 99], "same_seed_gives_identical_event_logs", |seed| {
        let a = fault_log(seed);
        let b = fault_log(seed);
        assert!(a.len() > 1000, "only {} events", a.len());
        assert!(a == b, "two runs of seed {seed} differ");
        assert!(a.iter().any(|l| l.contains("lost")));
        assert!(a.iter().any(|l| l.contains("crash")));
        assert!(a.iter().any(|l| l.contains("partition")));
        assert_ne!(a, fault_log(seed + 1), "another seed gave the same run");
    });
}
