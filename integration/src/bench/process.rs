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

/// A free loopback port (bound and released; good enough on a quiet machine).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
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
