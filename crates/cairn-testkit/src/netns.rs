//! Network namespaces for tests that must not touch the machine's network
//! (mDNS multicasts on every interface it may use).
//!
//! A [`Lab`] is N namespaces, each with `lo` and an `eth0` holding
//! `10.231.0.(i+2)/24`, joined by a bridge that lives in a namespace of its
//! own, so nothing is added to the root namespace but the namespace names.
//! Every link is created directly inside the namespaces. Dropping the lab
//! deletes them all (also when the test panics); labs left by a killed test
//! process are removed by the next one.
//!
//! [`Lab::etc_file`] gives one namespace its own file under `/etc` (e.g.
//! `hosts`): `ip netns exec` bind-mounts `/etc/netns/<ns>/<file>` over
//! `/etc/<file>`. Those files go with the lab too.
//!
//! Creating namespaces needs root. [`Lab::new_or_skip`] returns `None` with a
//! message when that fails, unless `CAIRN_REQUIRE_TOOLS=1` (CI, root), where
//! it panics.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Prefix of every namespace a lab creates: `cairn-t<pid>-<n>-...`.
const PREFIX: &str = "cairn-t";

/// Where `ip netns exec` finds a namespace's own `/etc` files.
const ETC_NETNS: &str = "/etc/netns";

/// The lab subnet's first three octets; only ever used inside the lab.
pub const SUBNET: [u8; 3] = [10, 231, 0];

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Namespaces joined by a bridge. See the module docs.
#[derive(Debug)]
pub struct Lab {
    switch: String,
    nodes: Vec<String>,
}

fn ip(args: &[&str]) -> Result<Output, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running `ip {}`: {e} (is iproute2 installed?)", args.join(" ")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Lab {
    /// `n` namespaces on one bridge, or why they could not be created.
    pub fn new(n: usize) -> Result<Lab, String> {
        remove_stale();
        let tag = format!("{PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let mut lab = Lab { switch: format!("{tag}-sw"), nodes: Vec::new() };
        ip(&["netns", "add", &lab.switch])?;
        let sw = lab.switch.clone();
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        // Snooping would drop multicast until a querier shows up.
        ip(&["-n", &sw, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = format!("{tag}-{i}");
            ip(&["netns", "add", &ns])?;
            lab.nodes.push(ns.clone());
            let port = format!("p{i}");
            ip(&["-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", lab.ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up", "multicast", "on"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(lab)
    }

    /// A lab of `n` namespaces; `None` (after printing why) when this
    /// process may not create namespaces. Panics instead when
    /// `CAIRN_REQUIRE_TOOLS=1`, as the test must run there.
    pub fn new_or_skip(n: usize, test: &str) -> Option<Lab> {
        match Lab::new(n) {
            Ok(lab) => Some(lab),
            Err(e) if tools_required() => {
                panic!("{test}: cannot create network namespaces and CAIRN_REQUIRE_TOOLS=1: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED {test}: cannot create network namespaces (needs root and iproute2): {e}");
                None
            }
        }
    }

    /// How many node namespaces.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the lab has no node namespaces.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The name of namespace `i`.
    pub fn ns(&self, i: usize) -> &str {
        &self.nodes[i]
    }

    /// The address of namespace `i` on the bridge.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], u8::try_from(i + 2).expect("at most 250 namespaces"))
    }

    /// `program args...` to be run inside namespace `i`.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(i)]).arg(program);
        c
    }

    /// Writes `/etc/netns/<ns i>/<name>`: commands [`Lab::command`] runs in
    /// namespace `i` see it as `/etc/<name>` (which must exist on the host,
    /// as the bind mount's target). Removed when the lab is dropped.
    pub fn etc_file(&self, i: usize, name: &str, contents: &str) -> Result<(), String> {
        let dir = std::path::Path::new(ETC_NETNS).join(self.ns(i));
        // Another lab's drop may remove an empty /etc/netns in between: try again once.
        if std::fs::create_dir_all(&dir).is_err() {
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Cuts namespace `i` off the bridge (its link goes down).
    pub fn unplug(&self, i: usize) -> Result<(), String> {
        ip(&["-n", &self.switch, "link", "set", &format!("p{i}"), "down"]).map(|_| ())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.switch)) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("netns lab: could not delete {ns}: {e}");
            }
            remove_etc(ns);
        }
    }
}

/// Removes namespace `ns`'s `/etc` files, and `/etc/netns` once empty.
fn remove_etc(ns: &str) {
    let dir = std::path::Path::new(ETC_NETNS).join(ns);
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        eprintln!("netns lab: could not remove {}: {e}", dir.display());
    }
    // Fails while another lab still has files there, as it should.
    let _ = std::fs::remove_dir(ETC_NETNS);
}

/// True when `CAIRN_REQUIRE_TOOLS=1`: a test missing what it needs fails.
pub fn tools_required() -> bool {
    std::env::var("CAIRN_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Deletes namespaces (and their `/etc` files) of labs whose test process is gone.
fn remove_stale() {
    let stale = |name: &str| {
        let pid = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next());
        pid.is_some_and(|p| p.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    if let Ok(out) = ip(&["netns", "list"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split_whitespace().next() else { continue };
            if stale(name) {
                let _ = ip(&["netns", "del", name]);
                remove_etc(name);
            }
        }
    }
    for entry in std::fs::read_dir(ETC_NETNS).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if stale(&name) {
            remove_etc(&name);
        }
    }
}

/// The port every lab node listens on.
pub const NODE_PORT: u16 = 7420;

impl Lab {
    /// `host:port` of the node in namespace `i`.
    pub fn node_addr(&self, i: usize) -> String {
        format!("{}:{NODE_PORT}", self.ip(i))
    }

    /// Runs `cairn serve` (the test's binary `bin`) in namespace `i` as node
    /// `n<i>` on [`Lab::node_addr`], its data dir under `dir`, with the
    /// config lines `extra` and `RUST_LOG=info`; returns once `cairn peers`
    /// gets an answer from inside the namespace.
    pub fn serve(&self, i: usize, bin: &str, dir: &std::path::Path, extra: &str) -> crate::NodeProcess {
        let addr = self.node_addr(i);
        let cfg =
            format!("node_id: n{i}\nlisten_addr: \"{addr}\"\ndata_dir: \"{}\"\n{extra}", dir.join("data").display());
        let path = dir.join("cairn.yaml");
        std::fs::write(&path, cfg).expect("write the node's config");
        let mut cmd = self.command(i, bin);
        cmd.args(["serve", "--config"]).arg(&path).env("RUST_LOG", "info").env_remove("CAIRN_CONFIG");
        crate::NodeProcess::spawn_until(cmd, &addr, || self.peers(i, bin, &addr).is_some())
    }

    /// Runs `cairn ARGS --node NODE` inside namespace `i`.
    pub fn cli(&self, i: usize, bin: &str, node: &str, args: &[&str]) -> Output {
        self.command(i, bin).args(args).args(["--node", node]).stdin(Stdio::null()).output().expect("run cairn")
    }

    /// The peers `node` lists (address, healthy), sorted, asked from inside
    /// namespace `i`; `None` when it does not answer.
    pub fn peers(&self, i: usize, bin: &str, node: &str) -> Option<Vec<(String, bool)>> {
        let o = self.cli(i, bin, node, &["peers", "--json"]);
        if !o.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let mut list: Vec<(String, bool)> = v
            .as_array()?
            .iter()
            .filter_map(|p| Some((p["address"].as_str()?.to_owned(), p["healthy"] == true)))
            .collect();
        list.sort();
        Some(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_reach_each_other_over_the_bridge_and_are_gone_after_drop() {
        let Some(lab) = Lab::new_or_skip(2, "netns harness") else { return };
        let names: Vec<String> = (0..2).map(|i| lab.ns(i).to_owned()).collect();
        // A TCP round trip from namespace 0 to a listener in namespace 1.
        let server = "import socket,sys\ns=socket.socket();s.bind((sys.argv[1],7));s.listen();print('ready',flush=True)\nc,_=s.accept();c.sendall(b'pong');c.close()";
        let mut srv = lab
            .command(1, "python3")
            .args(["-c", server, &lab.ip(1).to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(srv.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let client =
            "import socket,sys\nc=socket.create_connection((sys.argv[1],7),timeout=5);print(c.recv(4).decode())";
        let o = lab.command(0, "python3").args(["-c", client, &lab.ip(1).to_string()]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "pong", "{}", String::from_utf8_lossy(&o.stderr));
        assert!(srv.wait().unwrap().success());
        let root = String::from_utf8_lossy(&ip(&["addr"]).unwrap().stdout).to_string();
        assert!(!root.contains("10.231.0."), "no lab address leaks into the root namespace");
        drop(lab);
        let list = String::from_utf8_lossy(&ip(&["netns", "list"]).unwrap().stdout).to_string();
        for n in names {
            assert!(!list.contains(&n), "{n} still exists");
        }
    }
}
