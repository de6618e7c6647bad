//! The NAAM client library: active messages, one-sided ops, local execution, retries,
//! sharding, and typed wrappers for the bundled applications.
//!
//! ```no_run
//! use naam_client::{Client, Mica};
//! let client = Client::connect("127.0.0.1:7000".parse()?, None)?;
//! let mut mica = Mica::new(client)?;
//! mica.put(b"hello", b"world")?;
//! assert_eq!(mica.get(b"hello")?.as_deref(), Some(&b"world"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`Client`]: one UDP socket (one client per thread), one or more servers; `submit_*` +
//!   [`Client::poll`] keep many requests in flight, `call`/`read`/... block. Lost datagrams are
//!   retransmitted with the same request id and the `RETRANSMIT` flag, with exponential
//!   back-off from the server's measured round trip ([`rtt`]), up to
//!   [`ClientConfig::max_retries`] and [`ClientConfig::max_retry_span`]; then the call fails
//!   with [`ClientError::Timeout`]. A request refused as not executed may be retried under a
//!   new id (docs/client.md).
//! - [`Endpoint`]: the client's protocol with no socket and no clock (what [`Client`] wraps):
//!   requests and the time in, datagrams to send ([`Endpoint::poll_transmit`]), datagrams
//!   received ([`Endpoint::handle`]) and timers ([`Endpoint::poll_timeout`],
//!   [`Endpoint::handle_timeout`]), finished requests out; tests drive whole exchanges with
//!   simulated time (`tests/endpoint.rs`).
//! - [`ShardedClient`]: keys spread over servers by a [`HashRing`] with virtual nodes.
//! - Local execution ([`ExecMode`]): the server's handler runs in the client's VM pool, each
//!   step's ops sent as one one-sided request; used when asked, or while a server's placement
//!   hint (`location = client`) lease lasts.
//! - [`Mica`], [`BTree`]: the bundled applications, with their parameters from `Describe`.

#![forbid(unsafe_code)]

pub mod apps;
pub mod bundled;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod keys;
mod local;
pub mod program;
pub mod reply;
pub mod ring;
pub mod rtt;
pub mod sharded;
pub mod window;

pub use apps::{BTree, Mica};
pub use client::{Client, ClientStats, Endpoint, RegisterOptions, ServerAddr, ServerId, Transmit};
pub use config::{ClientConfig, ExecMode};
pub use error::{ClientError, Result};
pub use reply::{Completion, OffloadInfo, OpOutcome, Page, ProgramPiece, Reply, Response, Ticket};
pub use ring::HashRing;
pub use sharded::{ShardedClient, Shards};
