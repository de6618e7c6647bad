//! Real processes: a host agent and a dataplane started from the built binaries, driven by the
//! client library over UDP on loopback.

use naam_client::{BTree, ClientConfig, Mica};
use naam_core::wire::Location;
use naam_deploy::{Binaries, DeployConfig, Deployment};

fn deploy(home: &str) -> Deployment {
    let bins = Binaries::locate_or_build().expect("the host agent and dataplane programs");
    let cfg = DeployConfig {
        home: home.into(),
        mica_keys: 4096,
        btree_keys: 4096,
        // The classes stay at home: these tests are about where messages execute, not the
        // policy (on a loaded CI machine it saw the NIC busy and moved a class to the host).
        dataplane_args: [
            "--nic-high",
            "2.0",
            "--host-high",
            "2.0",
            "--queue-high",
            "1000000",
        ]
        .map(String::from)
        .to_vec(),
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

/// The README's worked example, end to end through the `naam` command line: verify, register
/// and call `handlers/examples/sum.bpf.c`, and check its reply against a one-sided read of the
/// same record.
#[test]
fn readme_example_sum_handler() {
    let d = deploy("nic");
    let naam = env!("CARGO_BIN_EXE_naam");
    let object = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../handlers/examples/sum.bpf.o"
    );
    let server = d.data_addr().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(naam)
            .args(["--server", &server])
            .env("NAAM_KEY_FILE", d.admin_key_file())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "naam {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run(&["verify", object]).starts_with("accepted: sum"));
    let id = run(&["offload", "add", object, "--class", "7", "--read-only"])
        .trim()
        .to_string();
    assert!(run(&["offload", "ls"])
        .lines()
        .any(|l| l.starts_with(&format!("{id}\t7\t"))));
    let out = run(&["call", &id, "--class", "7", "u32:4", "u32:0", "u64:128"]);
    let sum: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("u64 "))
        .expect("a u64 line")
        .parse()
        .unwrap();

    let mut c = d.client(ClientConfig::default()).unwrap();
    c.describe(0, "record").unwrap();
    let record = c.read(0, 4, 128, 64).unwrap();
    let expected = record
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .fold(0u64, u64::wrapping_add);
    assert_eq!(sum, expected);
    // Without --class the call goes to the offload's own class, at the server and here; a
    // wrong class is refused the same way at both (`--class` defaulted to 0 before, so a
    // plain call failed at the server and ran anyway with --local).
    for local in [&[][..], &["--local"][..]] {
        let mut args = vec!["call", &id, "u32:4", "u32:0", "u64:128"];
        args.extend(local);
        let out = run(&args);
        assert!(out.contains(&format!("u64 {expected}")), "{local:?}: {out}");
        // 64 is past the dataplane's classes: no port serves it, and the call used to time
        // out after 2.6 s and exit 3 ("may have been applied").
        for class in ["8", "64"] {
            let mut wrong = vec!["call", &id, "--class", class, "u32:4", "u32:0", "u64:128"];
            wrong.extend(local);
            let out = std::process::Command::new(naam)
                .args(["--server", &server])
                .env("NAAM_KEY_FILE", d.admin_key_file())
                .args(&wrong)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{local:?} {class}: {err}");
            assert!(err.contains("belongs to class 7"), "{local:?}: {err}");
        }
    }
    run(&["offload", "rm", &id]);
    assert!(!run(&["offload", "ls"])
        .lines()
        .any(|l| l.starts_with(&format!("{id}\t"))));
}

/// `--mica-lossless`: once the log is used up a PUT is refused with "log full" and nothing
/// acknowledged is lost; the default (lossy) table counts the bytes its log overwrote.
#[test]
fn a_lossless_mica_refuses_puts_when_full_and_loses_nothing_a_lossy_one_counts_evictions() {
    let bins = Binaries::locate_or_build().expect("the host agent and dataplane programs");
    for lossless in [true, false] {
        let cfg = DeployConfig {
            home: "nic".into(),
            // 64 keys of 64 bytes: a 16 KiB log, 6 KiB of it filled at start.
            mica_keys: 64,
            value_size: 64,
            btree_keys: 64,
            host_args: if lossless {
                vec!["--mica-lossless".into()]
            } else {
                Vec::new()
            },
            ..DeployConfig::default()
        };
        let d = Deployment::start(bins.clone(), cfg).expect("deployment starts");
        let mut mica = Mica::new(d.client(ClientConfig::default()).unwrap()).unwrap();
        // 40 keys written 10 times over (updates allocate log space too).
        let mut acked = std::collections::BTreeMap::new();
        let mut last = None;
        let mut refused = None;
        for i in 0..400u32 {
            let key = format!("new-{}", i % 40);
            let value = [i as u8; 64];
            match mica.put(key.as_bytes(), &value) {
                Ok(()) => {
                    last = Some((key.clone(), value));
                    acked.insert(key, value);
                }
                Err(e) => {
                    refused = Some(e.to_string());
                    break;
                }
            }
        }
        let stat = |name: &str| -> u64 {
            // The dataplane relays the host agent's counters, refreshed in the background.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let v = d.stats().unwrap().get(name).copied();
                match v {
                    Some(v) if v > 0 || std::time::Instant::now() > until => return v,
                    None if std::time::Instant::now() > until => panic!("no {name} in stats"),
                    _ => std::thread::sleep(std::time::Duration::from_millis(100)),
                }
            }
        };
        if lossless {
            let why = refused.expect("a lossless table fills up: 400 puts are 38 KiB of items");
            assert!(why.contains("log is full"), "{why}");
            assert_eq!(
                acked.len(),
                40,
                "every key was written before the log was full"
            );
            for (key, value) in &acked {
                assert_eq!(
                    mica.get(key.as_bytes()).unwrap().as_deref(),
                    Some(&value[..]),
                    "acknowledged {key} is still there"
                );
            }
            assert_eq!(stat("mica.lossless"), 1);
            assert_eq!(d.stats().unwrap().get("mica.log_evicted_bytes"), Some(&0));
        } else {
            assert_eq!(refused, None, "a lossy table never refuses for space");
            assert!(stat("mica.log_evicted_bytes") > 0, "the wrap is counted");
            // The newest items are intact.
            let (key, value) = last.unwrap();
            assert_eq!(
                mica.get(key.as_bytes()).unwrap().as_deref(),
                Some(&value[..])
            );
        }
    }
}
