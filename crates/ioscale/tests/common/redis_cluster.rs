//! A real Redis Cluster of three masters (no replicas: the failover tests are in the interop
//! suite) on free ports, created with `redis-cli --cluster create`, stopped on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisClusterServers {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl RedisClusterServers {
    pub fn start() -> RedisClusterServers {
        for _ in 0..5 {
            if let Some(cluster) = Self::try_start() {
                return cluster;
            }
        }
        panic!("could not start a Redis Cluster");
    }

    fn try_start() -> Option<RedisClusterServers> {
        let dir = std::env::temp_dir().join(format!(
            "ioscale-rc-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let mut cluster = RedisClusterServers {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let port = free_port()?;
            // The bus port defaults to port + 10000, which may not exist (> 65535).
            let bus_port = free_port()?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-port", &bus_port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--enable-debug-command", "local"])
                .arg("--cluster-config-file")
                .arg(cluster.dir.join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test installs it)");
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cluster
            .ports
            .iter()
            .all(|&port| command(port, &["PING"]).as_deref() == Some("+PONG"))
        {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !created.success() {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cluster.ports.iter().all(|&port| {
            bulk(port, &["CLUSTER", "INFO"]).is_some_and(|info| info.contains("cluster_state:ok"))
        }) {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// Seed urls of every master.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// `PUBSUB SHARDNUMSUB` of a channel summed over the masters (as Node counts servers).
    pub fn shard_numsub(&self, channel: &str) -> u64 {
        self.ports
            .iter()
            .filter_map(|&port| array_integer(port, &["PUBSUB", "SHARDNUMSUB", channel]))
            .sum()
    }

    /// Sends a command to every master; the first line of each reply (`None` when none came
    /// within 2 s).
    pub fn command_all(&self, args: &[&str]) -> Vec<Option<String>> {
        self.ports.iter().map(|&port| command(port, args)).collect()
    }

    /// `SPUBLISH`es raw bytes on the master that owns the channel (as any client could).
    pub fn spublish(&self, channel: &str, payload: &[u8]) -> bool {
        self.ports.iter().any(|&port| {
            let reply = raw_command(port, &[b"SPUBLISH", channel.as_bytes(), payload]);
            reply.is_some_and(|line| line.starts_with(':'))
        })
    }
}

impl Drop for RedisClusterServers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Option<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .ok()
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

fn raw_command(port: u16, args: &[&[u8]]) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line.trim_end().to_owned())
}

fn command(port: u16, args: &[&str]) -> Option<String> {
    let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
    raw_command(port, &args)
}

/// The body of a bulk-string reply.
fn bulk(port: u16, args: &[&str]) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).ok()?;
    let len: usize = header.trim_end().strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

/// The integer of a `[name, count]` array reply.
fn array_integer(port: u16, args: &[&str]) -> Option<u64> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    for _ in 0..3 {
        line.clear();
        reader.read_line(&mut line).ok()?;
    }
    line.clear();
    reader.read_line(&mut line).ok()?;
    line.trim_end().strip_prefix(':')?.parse().ok()
}
