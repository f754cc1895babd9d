//! `swarm-sim`: runs scenarios of the piece swarm and prints a table.
//! Usage: see `--help`, or `bench/swarm-sim.sh`.

use swarm_sim::sim::{Links, Scenario, run};

const HELP: &str = "swarm-sim [--nodes N...] [--sizes SIZE...] [--links fleet|ns200] [--fail FRACTION] \
[--kill-owner] [--today] [--liars K] [--seed S] [--slots K] [--poll SECONDS] [--piece SIZE] [--json FILE]
  --today: model today's design (every node fetches from the owner only) instead of the swarm
  SIZE: bytes, or with KiB/MiB/GiB; defaults: --nodes 100 1000 10000 --sizes 256MiB 3GiB --links fleet --fail 0.01";

fn size(s: &str) -> Result<u64, String> {
    let (num, mul) = if let Some(n) = s.strip_suffix("GiB") {
        (n, 1u64 << 30)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (s, 1)
    };
    let n: u64 = num.parse().map_err(|e| format!("size {s:?}: {e}"))?;
    n.checked_mul(mul).ok_or_else(|| format!("size {s:?} overflows"))
}

fn human(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) { format!("{} GiB", b >> 30) } else { format!("{} MiB", b >> 20) }
}

struct Args {
    nodes: Vec<usize>,
    sizes: Vec<u64>,
    links: Links,
    fail: f64,
    kill_owner: bool,
    today: bool,
    no_budget: bool,
    liars: usize,
    seed: u64,
    slots: Option<usize>,
    poll: Option<f64>,
    piece: Option<u64>,
    json: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        nodes: vec![],
        sizes: vec![],
        links: Links::Fleet,
        fail: 0.01,
        kill_owner: false,
        today: false,
        no_budget: false,
        liars: 0,
        seed: 1,
        slots: None,
        poll: None,
        piece: None,
        json: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let val = |i: usize| argv.get(i).cloned().ok_or_else(|| format!("{} needs a value", argv[i - 1]));
    while i < argv.len() {
        match argv[i].as_str() {
            "--nodes" | "--sizes" => {
                let which = argv[i].clone();
                while argv.get(i + 1).is_some_and(|v| !v.starts_with("--")) {
                    i += 1;
                    if which == "--nodes" {
                        a.nodes.push(argv[i].parse().map_err(|e| format!("--nodes {}: {e}", argv[i]))?);
                    } else {
                        a.sizes.push(size(&argv[i])?);
                    }
                }
            }
            "--links" => {
                i += 1;
                a.links = match val(i)?.as_str() {
                    "fleet" => Links::Fleet,
                    "ns200" => Links::Ns200,
                    other => return Err(format!("--links {other}: use fleet or ns200")),
                };
            }
            "--fail" => {
                i += 1;
                a.fail = val(i)?.parse().map_err(|e| format!("--fail: {e}"))?;
            }
            "--kill-owner" => a.kill_owner = true,
            "--today" => a.today = true,
            "--no-seed-budget" => a.no_budget = true,
            "--liars" => {
                i += 1;
                a.liars = val(i)?.parse().map_err(|e| format!("--liars: {e}"))?;
            }
            "--seed" => {
                i += 1;
                a.seed = val(i)?.parse().map_err(|e| format!("--seed: {e}"))?;
            }
            "--slots" => {
                i += 1;
                a.slots = Some(val(i)?.parse().map_err(|e| format!("--slots: {e}"))?);
            }
            "--poll" => {
                i += 1;
                a.poll = Some(val(i)?.parse().map_err(|e| format!("--poll: {e}"))?);
            }
            "--piece" => {
                i += 1;
                a.piece = Some(size(&val(i)?)?);
            }
            "--json" => {
                i += 1;
                a.json = Some(val(i)?);
            }
            "-h" | "--help" => return Err(HELP.into()),
            other => return Err(format!("unknown argument {other}\n{HELP}")),
        }
        i += 1;
    }
    if a.nodes.is_empty() {
        a.nodes = vec![100, 1000, 10_000];
    }
    if a.sizes.is_empty() {
        a.sizes = vec![256 << 20, 3 << 30];
    }
    Ok(a)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    println!(
        "| links | N | blob | failing | liars | owner killed | owner up/down (Mbit/s) | T1 (s) | p50 / T1 | p99 / T1 | max / T1 | origin / blob | completed / survivors | bad accepted | from non-holder | events | wall (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for &blob in &a.sizes {
        for &n in &a.nodes {
            let mut sc = Scenario::new(n, blob, a.links);
            sc.fail_fraction = a.fail;
            sc.kill_owner = a.kill_owner;
            sc.owner_only = a.today;
            sc.seed_budget = !a.no_budget;
            sc.liars = a.liars;
            sc.seed = a.seed;
            if let Some(k) = a.slots {
                sc.upload_slots = k;
            }
            if let Some(p) = a.poll {
                sc.poll_interval = p;
            }
            if let Some(p) = a.piece {
                sc.piece = p;
            }
            let o = match run(&sc) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("swarm-sim: {e}");
                    std::process::exit(2);
                }
            };
            let failing = ((n as f64) * a.fail).round() as usize;
            println!(
                "| {} | {n} | {} | {failing} | {} | {} | {:.0}/{:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {} / {} | {} | {} | {} | {:.1} |{}",
                if a.today { format!("{} today", a.links.name()) } else { a.links.name().to_owned() },
                human(blob),
                a.liars,
                if a.kill_owner { "yes" } else { "no" },
                o.owner_links.0 * 8.0 / 1e6,
                o.owner_links.1 * 8.0 / 1e6,
                o.t1,
                o.quantile(0.5) / o.t1,
                o.quantile(0.99) / o.t1,
                o.quantile(1.0) / o.t1,
                o.origin_ratio(blob),
                o.completed,
                o.survivors,
                o.bad_accepted,
                o.from_non_holder,
                o.events,
                o.wall,
                if o.timed_out { " TIMED OUT" } else { "" },
            );
            rows.push(serde_json::json!({
                "links": a.links.name(), "nodes": n, "blob": blob, "failing": failing, "liars": a.liars,
                "kill_owner": a.kill_owner, "today": a.today, "t1": o.t1, "p50": o.quantile(0.5), "p99": o.quantile(0.99),
                "max": o.quantile(1.0), "origin_bytes": o.origin_bytes, "completed": o.completed,
                "survivors": o.survivors, "bad_accepted": o.bad_accepted, "bad_caught": o.bad_caught,
                "from_non_holder": o.from_non_holder, "busy": o.busy, "events": o.events, "wall": o.wall,
                "timed_out": o.timed_out, "seed": a.seed, "slots": sc.upload_slots, "poll": sc.poll_interval, "piece": sc.piece,
            }));
        }
    }
    if let Some(path) = a.json {
        let body = serde_json::to_string_pretty(&rows).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, body) {
            eprintln!("writing {path}: {e}");
            std::process::exit(1);
        }
    }
}
