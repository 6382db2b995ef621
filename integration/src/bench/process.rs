//! Child processes of a benchmark run (Chief of State, the handler, the echo server), each on its own
//! loopback port, stopped when dropped; and the resident memory of a process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, ChildStdout, Command};

/// A binary next to the running one (all of the workspace's binaries land in one target directory).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let current = std::env::current_exe().context("cannot locate the running binary")?;
    let directory = current
        .parent()
        .context("the running binary has no parent directory")?;
    let candidate = directory.join(name);
    if candidate.exists() {
        return Ok(candidate);
    }
    // Test executables live one level deeper, in deps/.
    let above = directory.parent().map(|parent| parent.join(name));
    match above {
        Some(path) if path.exists() => Ok(path),
        _ => anyhow::bail!(
            "{name} not found next to {}: build it first (cargo build --release --workspace --bins)",
            current.display()
        ),
    }
}

/// Lowest port [`free_port`] hands out: above the well-known and common service ports.
const FIRST_PICKED_PORT: u16 = 10_000;

/// A free port for a child process to bind, picked below the kernel's ephemeral range.
///
/// A port taken from the ephemeral range (bind to 0, close) can be handed to any other process binding to
/// port 0 before the child binds it — with many test processes running at once, that happens. Below the
/// ephemeral range only explicit binds compete: the port is chosen at random, checked to be bindable on
/// every address, and never handed out twice by this process.
pub fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::Mutex;

    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let Some(ceiling) = ephemeral_range_start().filter(|start| *start > FIRST_PICKED_PORT + 1_000)
    else {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        return Ok(listener.local_addr()?.port());
    };
    let span = u64::from(ceiling - FIRST_PICKED_PORT);
    for _ in 0..1_000 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = FIRST_PICKED_PORT + u16::try_from(random % span)?;
        let mut handed_out = HANDED_OUT
            .lock()
            .map_err(|_| anyhow::anyhow!("port bookkeeping poisoned"))?;
        if handed_out.contains(&port) || std::net::TcpListener::bind(("0.0.0.0", port)).is_err() {
            continue;
        }
        handed_out.push(port);
        return Ok(port);
    }
    anyhow::bail!("no free port found below {ceiling}")
}

/// The first port of the kernel's ephemeral range (Linux), if it can be read.
fn ephemeral_range_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// A child process that is killed when dropped.
pub struct ChildProcess {
    pub name: String,
    pub address: SocketAddr,
    child: Child,
}

impl ChildProcess {
    /// Starts `binary args…` with `environment` and waits until `address` accepts TCP connections.
    pub async fn start(
        name: &str,
        binary: PathBuf,
        args: &[String],
        environment: &[(String, String)],
        address: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::launch(name, binary, args, environment, address, Stdio::null()).await
    }

    /// Like [`ChildProcess::start`], with the child's standard output piped to this process.
    pub async fn start_with_output(
        name: &str,
        binary: PathBuf,
        args: &[String],
        address: SocketAddr,
    ) -> anyhow::Result<(Self, ChildStdout)> {
        let mut process = Self::launch(name, binary, args, &[], address, Stdio::piped()).await?;
        let output = process
            .child
            .stdout
            .take()
            .context("the child's standard output was not piped")?;
        Ok((process, output))
    }

    async fn launch(
        name: &str,
        binary: PathBuf,
        args: &[String],
        environment: &[(String, String)],
        address: SocketAddr,
        stdout: Stdio,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(&binary);
        command
            .args(args)
            .envs(environment.iter().cloned())
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return Ok(Self {
                    name: name.to_string(),
                    address,
                    child,
                });
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("{name} exited during start-up with {status}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("{name} did not listen on {address} within 10 s")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resident memory of the process, in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("process already gone")?;
        rss_bytes(pid)
    }

    /// Kills the process with SIGKILL (a crash: nothing is flushed or handed off) and waits until it is gone.
    pub async fn kill_hard(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("cannot kill the process")
    }

    /// Stops the process with SIGTERM and waits for it (SIGKILL after 30 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// `VmRSS` of a process, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kilobytes: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS line")?
        .parse()?;
    Ok(kilobytes * 1024)
}
