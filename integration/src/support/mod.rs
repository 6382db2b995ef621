//! Test support: real servers on real sockets. A scriptable write handler, scriptable read handlers (gRPC and
//! HTTP), PostgreSQL schemas per test, and a helper that starts a Chief of State node on SQLite or PostgreSQL.

pub mod cluster_node;
pub mod database;
pub mod faulty_journal;
pub mod faulty_positions;
pub mod node;
pub mod read_handler;
pub mod read_side_node;
pub mod script_handler;

use std::time::Duration;

/// A port on 127.0.0.1 where nothing listens, reserved for as long as the value lives.
///
/// The socket is bound but never listens: connections to it are refused, and the kernel will not hand the
/// port to another test process meanwhile. (A port picked by binding and closing a listener can be handed
/// out again at once, and an "unreachable" handler then answers as some other test's server.)
pub struct ClosedPort {
    _reservation: tokio::net::TcpSocket,
    /// The reserved port.
    pub port: u16,
}

impl ClosedPort {
    /// Reserves a port on 127.0.0.1.
    pub fn reserve() -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let port = socket.local_addr()?.port();
        Ok(Self {
            _reservation: socket,
            port,
        })
    }

    /// The reserved address.
    pub fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns whether it held.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let give_up = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < give_up {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Runs each named scenario (an `async fn(Backend) -> anyhow::Result<()>` in the calling test file) once on
/// SQLite and once on PostgreSQL, as `sqlite::<name>` and `postgres::<name>`: the same behaviour suite for
/// both stores.
#[macro_export]
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario($crate::support::node::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario($crate::support::node::Backend::Postgres).await
                }
            )*
        }
    };
}
