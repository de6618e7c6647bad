//! Real processes: a host agent and a dataplane started from the built binaries, driven by the
//! client library over UDP on loopback.

use naam_client::deploy::{Binaries, DeployConfig, Deployment};
use naam_client::{BTree, ClientConfig, Mica};
use naam_core::wire::Location;

fn deploy(home: &str) -> Deployment {
    let bins = Binaries::locate_or_build().expect("the host agent and dataplane programs");
    let cfg = DeployConfig {
        home: home.into(),
        mica_keys: 4096,
        btree_keys: 4096,
        ..DeployConfig::default()
    };
    Deployment::start(bins, cfg).expect("deployment starts")
}

#[test]
fn mica_and_btree_execute_at_the_host_and_at_the_nic() {
    for (home, at) in [("host", Location::Host), ("nic", Location::Nic)] {
        let d = deploy(home);
        let mut mica = Mica::new(d.client(ClientConfig::default()).unwrap()).unwrap();
        mica.put(b"alpha", b"one").unwrap();
        assert_eq!(
            mica.get(b"alpha").unwrap().as_deref(),
            Some(&b"one"[..]),
            "home {home}"
        );
        assert_eq!(mica.get(b"missing").unwrap(), None);
        assert!(mica.delete(b"alpha").unwrap());
        assert_eq!(mica.get(b"alpha").unwrap(), None);

        let client = mica.into_inner();
        let mut tree = BTree::new(client).unwrap();
        // The host agent's tree holds the odd keys 1, 3, ... (docs/runtime.md).
        assert!(tree.lookup(3).unwrap().is_some(), "home {home}");
        assert_eq!(tree.lookup(4).unwrap(), None);

        // Where it ran is in the reply.
        let c = tree.inner_mut();
        let args = naam_handlers::btree::Args::lookup(3, 1).to_bytes();
        let reply = c.call(3, 3, &args).unwrap();
        assert_eq!(reply.executed_at, at, "home {home}");
    }
}
