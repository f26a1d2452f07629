//! Separate hosts for tests on one machine: each host is a Linux network
//! namespace with its own address, joined to the others by a veth pair and a
//! bridge, made and removed by the test itself. A host can be cut off
//! (every packet on its link dropped, silently, as a real partition does),
//! lose a share of its packets, or, where the kernel has the `netem`
//! queueing discipline, see added latency. Programs run on a host through
//! `ip netns exec`.
//!
//! Needs root (`ip`, and `nft` from Debian's `nftables`); `.ci/run` installs
//! what is missing. Everything a [`Lab`] made is removed when it is dropped.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Hosts one lab may hold (the /24 it lives in, less the bridge's address).
pub const HOSTS_MAX: u8 = 250;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("a lab holds at most {HOSTS_MAX} hosts (HOSTS_MAX)")]
    Full,
    #[error("this kernel has no {0} queueing discipline")]
    Unsupported(&'static str),
}

/// One host: a namespace, its link `eth0` and its address.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub namespace: String,
    pub address: Ipv4Addr,
}

/// A bridge and the hosts on it.
pub struct Lab {
    bridge: String,
    tag: String,
    /// The lab's /24, as its first three octets.
    net: [u8; 3],
    hosts: Vec<Host>,
}

static LABS: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> Result<String, LabError> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| LabError::Command {
            command: args.join(" "),
            message: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: args.join(" "),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Lab {
    /// A bridge with an address of its own (`.254`), so this namespace
    /// (the test) reaches every host.
    pub fn new() -> Result<Lab, LabError> {
        // Distinct per process and per lab, so tests in parallel never meet.
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id().wrapping_mul(31).wrapping_add(n)) & 0xffff;
        let tag = format!("{id:04x}");
        let net = [10, 200 + (id % 50) as u8, (id >> 6) as u8];
        let bridge = format!("plxb{tag}");
        let lab = Lab {
            bridge: bridge.clone(),
            tag,
            net,
            hosts: Vec::new(),
        };
        // A lab left by a test that was killed is removed first.
        let _ = run(&["ip", "link", "del", &bridge]);
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lab.address(254)),
            "dev",
            &bridge,
        ])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        Ok(lab)
    }

    fn address(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], n)
    }

    /// The address of this namespace (the test's) on the lab's bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.address(254)
    }

    /// A new host on the bridge, its link up and its address set.
    pub fn add_host(&mut self, name: &str) -> Result<Host, LabError> {
        let n = u8::try_from(self.hosts.len() + 1)
            .ok()
            .filter(|n| *n <= HOSTS_MAX)
            .ok_or(LabError::Full)?;
        let namespace = format!("plx{}-{name}", self.tag);
        let veth = format!("plx{}h{n}", self.tag);
        let _ = run(&["ip", "netns", "del", &namespace]);
        run(&["ip", "netns", "add", &namespace])?;
        let host = Host {
            name: name.to_owned(),
            namespace: namespace.clone(),
            address: self.address(n),
        };
        // Recorded before it is complete, so a failure still cleans up.
        self.hosts.push(host.clone());
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
        ])?;
        run(&["ip", "link", "set", &veth, "master", &self.bridge])?;
        run(&["ip", "link", "set", &veth, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &namespace];
            all.extend_from_slice(args);
            run(&all)
        };
        in_ns(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", host.address),
            "dev",
            "eth0",
        ])?;
        in_ns(&["ip", "link", "set", "eth0", "up"])?;
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// A command that runs `program` on `host`.
    pub fn command(&self, host: &Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.namespace]).arg(program);
        c
    }

    fn nft(&self, host: &Host, script: &str) -> Result<(), LabError> {
        run(&["ip", "netns", "exec", &host.namespace, "nft", script]).map(|_| ())
    }

    /// Drops every packet in and out of `host`'s link, without a word to
    /// either side: its connections go silent, as in a real partition.
    pub fn cut_off(&self, host: &Host) -> Result<(), LabError> {
        self.nft(
            host,
            "add table inet plexus_cut; \
             add chain inet plexus_cut input { type filter hook input priority 0; }; \
             add chain inet plexus_cut output { type filter hook output priority 0; }; \
             flush chain inet plexus_cut input; flush chain inet plexus_cut output; \
             add rule inet plexus_cut input iifname \"eth0\" drop; \
             add rule inet plexus_cut output oifname \"eth0\" drop",
        )
    }

    /// Undoes [`Lab::cut_off`].
    pub fn rejoin(&self, host: &Host) -> Result<(), LabError> {
        self.nft(
            host,
            "add table inet plexus_cut; delete table inet plexus_cut",
        )
    }

    /// Drops `percent` of the packets in each direction on `host`'s link
    /// (0 stops dropping).
    pub fn set_loss(&self, host: &Host, percent: u8) -> Result<(), LabError> {
        self.nft(
            host,
            "add table inet plexus_loss; delete table inet plexus_loss",
        )?;
        if percent == 0 {
            return Ok(());
        }
        // nft compares against 0..=99; all of it is a plain drop.
        let draw = if percent >= 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        self.nft(
            host,
            &format!(
                "add table inet plexus_loss; \
                 add chain inet plexus_loss input {{ type filter hook input priority 0; }}; \
                 add chain inet plexus_loss output {{ type filter hook output priority 0; }}; \
                 add rule inet plexus_loss input iifname \"eth0\" {draw}drop; \
                 add rule inet plexus_loss output oifname \"eth0\" {draw}drop"
            ),
        )
    }

    /// Delays every packet leaving `host` by `delay_ms`. Needs the kernel's
    /// `netem`; where it is missing (as on our CI machines) this says so.
    pub fn add_latency(&self, host: &Host, delay_ms: u32) -> Result<(), LabError> {
        run(&[
            "ip",
            "netns",
            "exec",
            &host.namespace,
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "netem",
            "delay",
            &format!("{delay_ms}ms"),
        ])
        .map(|_| ())
        .map_err(|e| match e {
            LabError::Command { message, .. } if message.contains("unknown") => {
                LabError::Unsupported("netem")
            }
            other => other,
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so both.
        for host in &self.hosts {
            let _ = run(&["ip", "netns", "del", &host.namespace]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn reaches(lab: &Lab, from: &Host, to: &Host) -> bool {
        lab.command(from, "ping")
            .args(["-c", "1", "-W", "1", &to.address.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn hosts_reach_each_other_until_one_is_cut_off_and_again_when_it_rejoins() {
        let mut lab = Lab::new().expect("a lab (needs root)");
        let a = lab.add_host("a").expect("host a");
        let b = lab.add_host("b").expect("host b");
        assert_ne!(a.address, b.address);
        assert!(reaches(&lab, &a, &b), "a reaches b");
        lab.cut_off(&b).expect("cut off");
        assert!(!reaches(&lab, &a, &b), "b is cut off");
        lab.cut_off(&b).expect("cutting off twice is harmless");
        lab.rejoin(&b).expect("rejoin");
        assert!(reaches(&lab, &a, &b), "b is back");
        lab.rejoin(&b).expect("rejoining twice is harmless");
        lab.set_loss(&b, 100).expect("loss");
        assert!(!reaches(&lab, &a, &b), "all packets lost");
        lab.set_loss(&b, 0).expect("no loss");
        assert!(reaches(&lab, &a, &b));
        match lab.add_latency(&b, 10) {
            Ok(()) | Err(LabError::Unsupported("netem")) => {}
            Err(e) => panic!("{e}"),
        }
        let namespaces = run(&["ip", "netns", "list"]).expect("list");
        assert!(namespaces.contains(&a.namespace));
        drop(lab);
        let namespaces = run(&["ip", "netns", "list"]).expect("list");
        assert!(!namespaces.contains(&a.namespace), "removed with the lab");
    }

    #[test]
    fn a_host_reaches_a_server_in_the_tests_namespace_over_tcp() {
        let mut lab = Lab::new().expect("a lab (needs root)");
        let host = lab.add_host("client").expect("host");
        let listener = TcpListener::bind((lab.gateway(), 0)).expect("listen on the bridge");
        let port = listener.local_addr().expect("addr").port();
        let connect = format!("exec 3<>/dev/tcp/{}/{port}", lab.gateway());
        let client = lab
            .command(&host, "bash")
            .args(["-c", &connect])
            .output()
            .expect("bash");
        assert!(
            client.status.success(),
            "{}",
            String::from_utf8_lossy(&client.stderr)
        );
        listener.set_nonblocking(false).expect("blocking");
        let (_, from) = listener.accept().expect("the host connected");
        assert_eq!(from.ip(), std::net::IpAddr::V4(host.address));
        lab.cut_off(&host).expect("cut off");
        let blocked = lab
            .command(&host, "timeout")
            .args(["2", "bash", "-c", &connect])
            .output()
            .expect("bash");
        assert!(!blocked.status.success(), "a cut-off host connects nowhere");
    }
}
