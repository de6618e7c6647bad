//! Several servers, keys spread over them by consistent hashing.

use crate::client::{Client, RegisterOptions, ServerAddr, ServerId};
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::ring::{HashRing, DEFAULT_VNODES};
use std::ops::{Deref, DerefMut};

/// Something that sends keyed requests: a [`Client`] (every key on server 0) or a
/// [`ShardedClient`] (keys on a hash ring). The typed application wrappers use it.
pub trait Shards {
    fn client(&mut self) -> &mut Client;
    fn client_ref(&self) -> &Client;
    /// The server that owns `key`.
    fn server_for(&self, key: &[u8]) -> ServerId;
    fn server_count(&self) -> usize;
}

impl Shards for Client {
    fn client(&mut self) -> &mut Client {
        self
    }
    fn client_ref(&self) -> &Client {
        self
    }
    fn server_for(&self, _key: &[u8]) -> ServerId {
        0
    }
    fn server_count(&self) -> usize {
        self.servers()
    }
}

/// A client of several servers: one socket, keys placed by a [`HashRing`].
pub struct ShardedClient {
    client: Client,
    ring: HashRing,
}

impl ShardedClient {
    pub fn connect(servers: &[ServerAddr], cfg: ClientConfig) -> Result<Self> {
        Self::with_vnodes(servers, cfg, DEFAULT_VNODES)
    }

    pub fn with_vnodes(servers: &[ServerAddr], cfg: ClientConfig, vnodes: usize) -> Result<Self> {
        if servers.is_empty() {
            return Err(ClientError::NoSuchServer {
                server: 0,
                servers: 0,
            });
        }
        Ok(Self {
            client: Client::with_servers(servers, cfg)?,
            ring: HashRing::new(servers.len(), vnodes),
        })
    }

    pub fn ring(&self) -> &HashRing {
        &self.ring
    }

    /// Registers `object` on every server. The offload must get the same id everywhere (the
    /// servers run the same registrations), else this fails naming both ids.
    pub fn register_all(&mut self, object: &[u8], opts: &RegisterOptions) -> Result<u32> {
        let mut id = None;
        for s in 0..self.client.servers() {
            let got = self.client.register(s, object, opts)?;
            match id {
                None => id = Some(got),
                Some(first) if first != got => {
                    return Err(ClientError::App {
                        app: "sharding",
                        reason: format!(
                            "offload registered as {first} on server 0 but as {got} on server {s}"
                        ),
                    })
                }
                Some(_) => {}
            }
        }
        Ok(id.expect("at least one server"))
    }

    /// Unregisters offload `id` on every server.
    pub fn unregister_all(&mut self, id: u32) -> Result<()> {
        for s in 0..self.client.servers() {
            self.client.unregister(s, id)?;
        }
        Ok(())
    }
}

impl Deref for ShardedClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for ShardedClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Shards for ShardedClient {
    fn client(&mut self) -> &mut Client {
        &mut self.client
    }
    fn client_ref(&self) -> &Client {
        &self.client
    }
    fn server_for(&self, key: &[u8]) -> ServerId {
        self.ring.server_for(key)
    }
    fn server_count(&self) -> usize {
        self.client.servers()
    }
}
