//! Client settings.

use naam_core::auth::Credential;
use naam_core::region::TenantId;
use naam_core::vm::Engine;
use std::time::Duration;

/// Where active messages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecMode {
    /// Always send the message to the server.
    Server,
    /// Always run the handler here, its ops sent as one-sided requests.
    Local,
    /// Send to the server, and follow its placement hints: run read-only offloads of a class
    /// here while a `location = client` lease lasts.
    #[default]
    Auto,
}

impl std::str::FromStr for ExecMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "server" => Ok(ExecMode::Server),
            "local" | "client" => Ok(ExecMode::Local),
            "auto" => Ok(ExecMode::Auto),
            other => Err(format!(
                "unknown execution mode {other:?} (server, client, auto)"
            )),
        }
    }
}

/// Settings of a [`crate::Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The tenant this client acts for (bundled applications belong to tenant 1).
    pub tenant: TenantId,
    /// Time to wait for the first reply before retransmitting, at least: a server whose
    /// replies take longer (measured, `crate::rtt`) gets its round trip's timeout instead.
    pub timeout: Duration,
    /// Retransmissions after the first send; then the call fails with a timeout.
    pub max_retries: u32,
    /// The back-off doubles the timeout per retransmission up to this.
    pub max_backoff: Duration,
    /// The longest time between the first and the last copy of one request id: a call gives
    /// up (a timeout, outcome unknown) rather than retransmit later. It must stay below the
    /// servers' retention of replies (`naam-dataplane --dedup-retain-ms`, 3 s by default):
    /// a retransmission of a mutation whose reply was lost, arriving after its reply was
    /// forgotten, would run it again. With the round trip's timeout (`crate::rtt`) the
    /// retries alone no longer bound that time.
    pub max_retry_span: Duration,
    pub exec_mode: ExecMode,
    /// Step budget of locally executed messages (the servers' default is 32).
    pub max_steps: u32,
    /// VM engine for local execution.
    pub engine: Engine,
    /// The credential control requests are sealed with (docs/security.md); `None` sends them
    /// unsealed, which servers refuse (`unauthorized`). See [`crate::keys`].
    pub credential: Option<Credential>,
    /// Requests on the wire to one server at most (the congestion window's ceiling; the
    /// window itself adapts below it, `crate::window`). `usize::MAX` turns congestion
    /// control off.
    pub max_window: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            tenant: 1,
            timeout: Duration::from_millis(50),
            max_retries: 5,
            max_backoff: Duration::from_secs(1),
            max_retry_span: Duration::from_millis(naam_core::wire::DEFAULT_RETRY_SPAN_MS),
            exec_mode: ExecMode::Auto,
            max_steps: naam_core::exec::DEFAULT_MAX_STEPS,
            engine: Engine::native(),
            credential: None,
            max_window: 4096,
        }
    }
}

impl ClientConfig {
    /// The wait before attempt `attempt` (0 = the first send) times out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_from(self.timeout, attempt)
    }

    /// The same from a first wait of `rto` (the server's measured retransmission timeout,
    /// at least `timeout`): doubling per attempt, up to the larger of `max_backoff` and `rto`.
    pub fn backoff_from(&self, rto: Duration, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(16);
        rto.saturating_mul(factor).min(self.max_backoff.max(rto))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = ClientConfig {
            timeout: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..ClientConfig::default()
        };
        let waits: Vec<u128> = (0..5).map(|a| c.backoff(a).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
        assert_eq!(
            c.backoff(u32::MAX),
            Duration::from_millis(50),
            "no overflow"
        );
    }

    #[test]
    fn exec_modes_parse() {
        assert_eq!("client".parse::<ExecMode>(), Ok(ExecMode::Local));
        assert_eq!("server".parse::<ExecMode>(), Ok(ExecMode::Server));
        assert!("nic".parse::<ExecMode>().is_err());
    }
}
