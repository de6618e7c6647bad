//! The host agent's DESCRIBE answers for the bundled applications, kept so that a stalled or
//! restarting host agent does not stop new clients: every client learns an application's
//! regions and keys with DESCRIBE before its first message, and the NIC serves those
//! messages without the host agent (a shift), so only DESCRIBE would still need it.
//!
//! An application's parameters are fixed for the life of a host agent (its regions are built
//! or restored at start), so an answer stays true until the host agent is replaced; the cache
//! is emptied when the link reconnects and filled again, for every principal of the keyring
//! (the dataplane holds the keys: it seals each request as that principal). Answers are kept
//! per principal: the host agent decides who may describe what, and a principal gets from
//! the cache only what the host agent answered that principal. Only the bundled applications' names are kept:
//! the other DESCRIBE names are commands (`congest:`, `snapshot`, ...) or live values
//! (`host`), never answered from here.

use naam_core::auth::Principal;
use naam_core::wire::{Body, Message};

/// Pages kept in all (principals x applications x pages); the oldest goes first.
const CAPACITY: usize = 64;

/// Whether DESCRIBE `app` names a bundled application (a cacheable answer).
pub fn is_bundled_app(app: &str) -> bool {
    naam_handlers::bundled::ALL.iter().any(|o| o.app == app)
}

/// The bundled applications' names, each once.
pub fn bundled_apps() -> Vec<&'static str> {
    let mut apps: Vec<&'static str> = naam_handlers::bundled::ALL.iter().map(|o| o.app).collect();
    apps.dedup();
    apps
}

#[derive(Default)]
pub struct Described {
    /// ((who asked, application, first entry), the host agent's whole reply datagram).
    pages: Vec<((Principal, String, u32), Vec<u8>)>,
    /// DESCRIBE requests answered from here while the host agent was unavailable.
    pub served: u64,
}

impl Described {
    /// Keeps `reply` (a datagram from the host agent) when it is a DESCRIBE_REPLY.
    pub fn store(&mut self, who: Principal, app: &str, start: u32, reply: &[u8]) {
        if !matches!(
            Message::parse(reply).map(|m| m.body),
            Ok(Body::DescribeReply(_))
        ) {
            return;
        }
        self.pages
            .retain(|((w, a, s), _)| !(*w == who && a == app && *s == start));
        if self.pages.len() == CAPACITY {
            self.pages.remove(0);
        }
        self.pages
            .push(((who, app.to_owned(), start), reply.to_vec()));
    }

    /// The reply datagram kept for `who`'s DESCRIBE of `app` from entry `start`, counted as
    /// served.
    pub fn serve(&mut self, who: Principal, app: &str, start: u32) -> Option<&[u8]> {
        let (_, reply) = self
            .pages
            .iter()
            .find(|((w, a, s), _)| *w == who && a == app && *s == start)?;
        self.served += 1;
        Some(reply)
    }

    /// Forgets every answer (a new host agent may have other regions and keys).
    pub fn clear(&mut self) {
        self.pages.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use naam_core::wire::{EntryList, ErrorCode, ErrorRepr, KvEntry, KvListRepr};

    fn reply(body: Body<'_>) -> Vec<u8> {
        let mut out = vec![0u8; 512];
        let n = Message::new(9, 0, body).emit(&mut out).unwrap();
        out.truncate(n);
        out
    }

    fn description(value: u64) -> Vec<u8> {
        let e = [KvEntry {
            name: "keys",
            value,
        }];
        reply(Body::DescribeReply(KvListRepr {
            more: false,
            next: 0,
            entries: EntryList::from_slice(&e),
        }))
    }

    #[test]
    fn answers_are_kept_per_principal_application_and_page() {
        let mut d = Described::default();
        let tenant = Principal::Tenant(1);
        d.store(Principal::Admin, "mica", 0, &description(1));
        d.store(Principal::Admin, "mica", 0, &description(2));
        assert_eq!(
            d.serve(Principal::Admin, "mica", 0),
            Some(&description(2)[..])
        );
        assert_eq!(
            d.serve(tenant, "mica", 0),
            None,
            "another principal's answer"
        );
        assert_eq!(d.serve(Principal::Admin, "btree", 0), None);
        assert_eq!(d.serve(Principal::Admin, "mica", 1), None, "another page");
        assert_eq!(d.served, 1);
        let refused = reply(Body::Error(ErrorRepr::new(ErrorCode::Forbidden, "no")));
        d.store(tenant, "mica", 0, &refused);
        assert_eq!(
            d.serve(tenant, "mica", 0),
            None,
            "only descriptions are kept"
        );
        d.clear();
        assert_eq!(d.serve(Principal::Admin, "mica", 0), None);
    }

    #[test]
    fn only_bundled_applications_are_cacheable_and_the_cache_is_bounded() {
        assert!(is_bundled_app("mica") && is_bundled_app("btree") && is_bundled_app("record"));
        for command in [
            "host",
            "snapshot",
            "shutdown",
            "congest:10",
            "congest-nic:10",
            "",
        ] {
            assert!(!is_bundled_app(command), "{command}");
        }
        assert_eq!(bundled_apps(), ["mica", "btree", "record"]);
        let mut d = Described::default();
        for t in 0..=CAPACITY as u32 {
            d.store(Principal::Tenant(t), "mica", 0, &description(t.into()));
        }
        assert_eq!(d.pages.len(), CAPACITY);
        assert_eq!(
            d.serve(Principal::Tenant(0), "mica", 0),
            None,
            "the oldest went"
        );
        assert!(d
            .serve(Principal::Tenant(CAPACITY as u32), "mica", 0)
            .is_some());
    }
}
