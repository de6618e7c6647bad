//! The `naam` command line: the client commands. `src/bin/naam.rs` parses arguments and calls
//! [`run`]; output is plain text on stdout (one value, or one record per line), errors are one
//! line on stderr and a non-zero exit (printed by the binary).

use crate::apps::{BTree, Mica};
use crate::client::{Client, RegisterOptions, ServerAddr};
use crate::config::{ClientConfig, ExecMode};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use naam_core::auth::Principal;
use naam_core::wire::ErrorCode;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The server's data base port (class c is served on BASE + c).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:7000",
        value_name = "IP:PORT"
    )]
    pub server: SocketAddr,
    /// The server's control port [default: the data base port - 1].
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub control: Option<SocketAddr>,
    /// Execute handlers at the client (their ops sent as one-sided requests).
    #[arg(long, global = true)]
    pub local: bool,
    /// Milliseconds to wait for a reply before the first retransmission (longer when the
    /// server's measured round trip is). The wait doubles at each retransmission up to the
    /// larger of 1 s and MS; a request fails after --retries of them, and is never sent again
    /// later than 2.5 s after its first copy (the servers keep replies 3 s): with the
    /// defaults after about 2.6 s; with MS = 5000, after 5 s (no retransmission).
    #[arg(long, global = true, default_value_t = 50, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,
    /// Retransmissions of a request without a reply before it fails.
    #[arg(long, global = true, default_value_t = 5, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=30))]
    pub retries: u32,
    /// Key file to seal control requests with [default: $NAAM_KEY_FILE, else admin.key in
    /// the local deployment's run directory when present] (docs/security.md).
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<std::path::PathBuf>,
    /// The tenant to act for: registered offloads belong to it, messages run as it
    /// [default: the key's own tenant for a tenant's key, else 1 (the bundled applications')].
    #[arg(long, global = true, value_name = "N")]
    pub tenant: Option<u32>,
    /// Print one JSON document instead of text lines (errors still go to stderr, one line).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Print the value of KEY (MICA).
    Get {
        key: String,
        /// KEY is given and the value printed as hex digits (keys and values are bytes: the
        /// bundled data's are not text).
        #[arg(long)]
        hex: bool,
    },
    /// Store KEY = VALUE (MICA).
    Put {
        key: String,
        value: String,
        /// KEY and VALUE are hex digits.
        #[arg(long)]
        hex: bool,
    },
    /// Remove KEY (MICA); fails when it is not there.
    Delete {
        key: String,
        /// KEY is hex digits.
        #[arg(long)]
        hex: bool,
    },
    /// The B-tree.
    #[command(subcommand)]
    Btree(BTreeCommand),
    /// Register, list and unregister offloads.
    #[command(subcommand)]
    Offload(OffloadCommand),
    /// Print the server's counters, one "name value" per line.
    Stats,
    /// DESCRIBE NAME, one "name value" per line: an application's parameters (`mica`,
    /// `btree`, `record`), the host agent (`host`), or an admin command: `snapshot`,
    /// `congest:MS` (the host's cores taken for MS ms), `congest-nic:MS` (the NIC's), `shutdown`
    /// (docs/runtime.md).
    Describe { name: String },
    /// Send one active message to offload ID and print where it ran and its output.
    Call {
        id: u32,
        /// Steering class of the offload (its UDP port is base + class) [default: the
        /// offload's own, from the server's list].
        #[arg(long)]
        class: Option<u16>,
        /// Arguments, concatenated in order: u8:N, u32:N, u64:N (little-endian), hex:BYTES,
        /// str:TEXT.
        args: Vec<String>,
    },
}

impl ClientCommand {
    /// Whether the command changes something at the server (a write, a registration, a
    /// call of a handler that may write, an admin command): when such a command fails with
    /// its outcome unknown, it may still have been applied.
    pub fn mutates(&self) -> bool {
        match self {
            ClientCommand::Put { .. }
            | ClientCommand::Delete { .. }
            | ClientCommand::Call { .. }
            | ClientCommand::Offload(OffloadCommand::Add { .. } | OffloadCommand::Rm { .. }) => {
                true
            }
            ClientCommand::Describe { name } => crate::client::is_command(name),
            ClientCommand::Get { .. }
            | ClientCommand::Btree(_)
            | ClientCommand::Offload(_)
            | ClientCommand::Stats => false,
        }
    }
}

/// The context of a failed call of a read-only offload (which cannot have changed anything).
#[derive(Debug)]
struct ReadOnlyCall(u32);

impl std::fmt::Display for ReadOnlyCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "calling read-only offload {}", self.0)
    }
}

/// Whether a failed command's error leaves its outcome unknown: it timed out waiting for
/// (or was answered `outcome_unknown` to) a request that changes something, not a query of
/// its preparation (`put` reads the table's geometry first) nor a read-only offload's call.
pub fn outcome_unknown(cmd: &ClientCommand, e: &anyhow::Error) -> bool {
    use naam_core::wire::Kind;
    cmd.mutates()
        && e.downcast_ref::<ReadOnlyCall>().is_none()
        && e.chain()
            .filter_map(|c| c.downcast_ref::<crate::ClientError>())
            .any(|c| match c {
                crate::ClientError::Timeout { awaited, .. } => !matches!(
                    awaited,
                    Kind::DescribeReply | Kind::StatsReply | Kind::ListReply | Kind::FetchReply
                ),
                other => other.may_have_executed(),
            })
}

/// Encodes `naam call` arguments.
pub fn encode_args(args: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for a in args {
        let (kind, v) = a.split_once(':').with_context(|| {
            format!("argument {a:?}: expected KIND:VALUE (u8, u32, u64, hex, str)")
        })?;
        // A number of the kind's width, decimal or 0x-hex; the error names that width's range.
        let num = |v: &str, max: u64, range: &str| -> anyhow::Result<u64> {
            match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => v.parse().ok(),
            }
            .filter(|n| *n <= max)
            .with_context(|| format!("argument {a:?}: not a number from 0 to {range}"))
        };
        match kind {
            "u8" => out.push(num(v, u8::MAX.into(), "255")? as u8),
            "u32" => {
                out.extend_from_slice(&(num(v, u32::MAX.into(), "2^32 - 1")? as u32).to_le_bytes())
            }
            "u64" => out.extend_from_slice(&num(v, u64::MAX, "2^64 - 1")?.to_le_bytes()),
            "str" => out.extend_from_slice(v.as_bytes()),
            "hex" => out.extend(from_hex(v).with_context(|| format!("argument {a:?}"))?),
            _ => bail!("argument {a:?}: unknown kind {kind:?} (u8, u32, u64, hex, str)"),
        }
    }
    Ok(out)
}

/// Bytes from hex digits (two a byte, either case).
pub fn from_hex(v: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(v.is_ascii(), "not hex");
    anyhow::ensure!(v.len() % 2 == 0, "odd number of hex digits");
    (0..v.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v[i..i + 2], 16).context("not hex"))
        .collect()
}

/// Lower-case hex digits of `b`.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A MICA key or value as given on the command line: its text's bytes, or with `--hex` the
/// bytes its digits spell.
fn cli_bytes(what: &str, v: &str, hex: bool) -> anyhow::Result<Vec<u8>> {
    if hex {
        from_hex(v).with_context(|| format!("{what} {v:?} (--hex)"))
    } else {
        Ok(v.as_bytes().to_vec())
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum BTreeCommand {
    /// Print the value stored under KEY.
    Lookup { key: u64 },
    /// Print up to N "key value" pairs from key FROM on.
    Scan { from: u64, n: usize },
}

#[derive(Debug, Clone, Subcommand)]
pub enum OffloadCommand {
    /// Register an eBPF ELF object; prints the offload id.
    Add {
        file: PathBuf,
        /// ELF section of the entry point [default: the first executable one].
        #[arg(long)]
        section: Option<String>,
        /// Steering class of its messages [default: the lowest class whose offloads are
        /// all the tenant's and of the same mode (--read-only or not), else the lowest class
        /// no other tenant's offload uses, else (past the tenant's number of classes) the
        /// lowest the tenant holds: a class is one tenant's, and it goes to the clients only
        /// when all its offloads are read-only].
        #[arg(long)]
        class: Option<u16>,
        /// Offload name [default: the file name without extensions].
        #[arg(long)]
        name: Option<String>,
        /// The handler only reads (clients may run it on a placement hint).
        #[arg(long)]
        read_only: bool,
    },
    /// List offloads: "id class tenant ro insns name", one per line after a header.
    Ls,
    /// Show offload ID (or every offload), as `bpftool prog show`: id, name, tenant, class,
    /// instructions, worst-case path of a step, where its class runs now, and what the NIC and
    /// the host ran of it (runs, steps, errors, mean ns per run; the NIC measures run time
    /// with --metrics-addr).
    Show { id: Option<u32> },
    /// Print offload ID's verified instructions, one per line (`bpftool prog dump xlated`):
    /// fetched from the server, checked against their digest and verified here first.
    Dump { id: u32 },
    /// Unregister offload ID.
    Rm { id: u32 },
}

fn connect(g: &GlobalArgs) -> anyhow::Result<Client> {
    let key_file = crate::keys::locate(g.key_file.as_deref());
    let credential = key_file.as_deref().map(crate::keys::load).transpose()?;
    if let Some(warning) = key_file.as_deref().and_then(crate::keys::exposed) {
        // Not `eprintln!`, which panics when stderr is closed.
        let _ = writeln!(std::io::stderr(), "naam: warning: {warning}");
    }
    // A tenant's key speaks for its tenant; the admin's for the tenant given (default 1).
    let tenant = match credential.as_ref().map(|c| c.principal) {
        Some(Principal::Tenant(t)) => match g.tenant {
            Some(asked) if asked != t => bail!(
                "--tenant {asked}: the key file is tenant {t}'s, which may act only for itself"
            ),
            _ => t,
        },
        _ => g.tenant.unwrap_or(ClientConfig::default().tenant),
    };
    let cfg = ClientConfig {
        tenant,
        exec_mode: if g.local {
            ExecMode::Local
        } else {
            ExecMode::Server
        },
        timeout: std::time::Duration::from_millis(g.timeout_ms),
        max_retries: g.retries,
        credential,
        ..ClientConfig::default()
    };
    Ok(Client::with_servers(
        &[ServerAddr::new(g.server, g.control)],
        cfg,
    )?)
}

/// Runs one client command, writing its output to `out`.
pub fn run(g: &GlobalArgs, cmd: &ClientCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    run_inner(g, cmd, out).map_err(|e| explain(g, e))
}

/// What the user is told of a failed command. Only what went wrong with the server is said
/// to be the server's: a missing file or a bad argument is not.
fn explain(g: &GlobalArgs, e: anyhow::Error) -> anyhow::Error {
    let errors = || {
        e.chain()
            .filter_map(|c| c.downcast_ref::<crate::ClientError>())
    };
    let restarted = errors().any(|c| {
        matches!(c, crate::ClientError::Server { code: ErrorCode::Unauthorized, detail, .. }
                if *detail == naam_core::auth::Refusal::BeforeStart.detail())
    });
    if restarted {
        // Not the key: the server restarted while this command was under way. A query is
        // sealed again on its own; a command that changes something may have run before
        // the restart, so it is not.
        e.context(format!(
            "server {} restarted while the request was under way: it may or may not have \
             run before the restart (look, e.g. `naam offload ls`), then run it again",
            g.server
        ))
    } else if errors().any(|c| c.code() == Some(ErrorCode::Unauthorized)) {
        // The server says no more (an attacker learns nothing of why): what the user
        // can check is which key this command sealed with.
        let key = match crate::keys::locate(g.key_file.as_deref()) {
            None => format!(
                "no key file (give one with --key-file FILE or {}: the host agent \
                     writes admin.key and tenant-N.key in its run directory)",
                crate::keys::KEY_FILE_ENV
            ),
            Some(p) => format!(
                "its keys do not include the one in {} (another deployment's, or revoked)",
                p.display()
            ),
        };
        e.context(format!("server {} refused the request: {key}", g.server))
    } else if errors().any(|c| c.involves_server()) {
        e.context(format!("server {}", g.server))
    } else {
        e
    }
}

fn run_inner(g: &GlobalArgs, cmd: &ClientCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let doc = answer(g, connect(g)?, cmd)?;
    if g.json {
        writeln!(out, "{}", serde_json::to_string(&doc.json)?)?;
    } else {
        out.write_all(doc.text.as_bytes())?;
    }
    Ok(())
}

/// What a command prints: text lines, or one JSON document with `--json`.
struct Answer {
    text: String,
    json: serde_json::Value,
}

impl Answer {
    fn new(text: String, json: serde_json::Value) -> Answer {
        Answer { text, json }
    }
}

fn answer(g: &GlobalArgs, client: Client, cmd: &ClientCommand) -> anyhow::Result<Answer> {
    use serde_json::json;
    Ok(match cmd {
        ClientCommand::Get { key, hex } => {
            let k = cli_bytes("key", key, *hex)?;
            let mut mica = Mica::new(client)?;
            match mica.get(&k)? {
                Some(v) => {
                    // Printed as it is or not at all: a value that is not text would be
                    // changed by printing it as text.
                    let value = if *hex {
                        to_hex(&v)
                    } else {
                        let len = v.len();
                        let text = String::from_utf8(v).map_err(|_| {
                            anyhow::anyhow!(
                                "the value of {key:?} is not UTF-8 text ({len} bytes); print it with --hex"
                            )
                        })?;
                        // Written to a terminal, escapes and carriage returns stored by
                        // whoever wrote the value would act on it (JSON escapes them).
                        let acts = |c: char| c.is_control() && c != '\t' && c != '\n';
                        anyhow::ensure!(
                            g.json || !text.chars().any(acts),
                            "the value of {key:?} holds control characters ({len} bytes); print it with --hex or --json"
                        );
                        text
                    };
                    Answer::new(format!("{value}\n"), json!({ "key": key, "value": value }))
                }
                None => bail!("key not found: {key}"),
            }
        }
        ClientCommand::Put { key, value, hex } => {
            let (k, v) = (
                cli_bytes("key", key, *hex)?,
                cli_bytes("value", value, *hex)?,
            );
            let mut mica = Mica::new(client)?;
            mica.put(&k, &v)?;
            Answer::new(String::new(), json!({ "key": key, "stored": true }))
        }
        ClientCommand::Delete { key, hex } => {
            let k = cli_bytes("key", key, *hex)?;
            let mut mica = Mica::new(client)?;
            if !mica.delete(&k)? {
                bail!("key not found: {key}");
            }
            Answer::new(String::new(), json!({ "key": key, "deleted": true }))
        }
        ClientCommand::Btree(BTreeCommand::Lookup { key }) => {
            let mut bt = BTree::new(client)?;
            match bt.lookup(*key)? {
                Some(v) => Answer::new(format!("{v}\n"), json!({ "key": key, "value": v })),
                None => bail!("key not found: {key}"),
            }
        }
        ClientCommand::Btree(BTreeCommand::Scan { from, n }) => {
            let mut bt = BTree::new(client)?;
            let pairs = bt.scan(*from, *n)?;
            let text = pairs.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
            Answer::new(text, json!({ "pairs": pairs }))
        }
        ClientCommand::Offload(OffloadCommand::Add {
            file,
            section,
            class,
            name,
            read_only,
        }) => {
            // Bounded and regular files only: `/dev/zero` was read without end.
            let object = crate::program::read_object(file)
                .with_context(|| format!("reading {}", file.display()))?;
            if object.is_empty() {
                bail!(
                    "{}: empty file (an eBPF ELF object was expected)",
                    file.display()
                );
            }
            if *read_only {
                warn_if_it_writes(&object, section.as_deref());
            }
            let name = name.clone().unwrap_or_else(|| {
                let stem = file
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                stem.split('.').next().unwrap_or("offload").to_owned()
            });
            let mut client = client;
            let classes = match class {
                Some(c) => vec![*c],
                None => default_classes(&mut client, *read_only)?,
            };
            let mut opts = RegisterOptions {
                name,
                section: section.clone(),
                class: classes[0],
                read_only: *read_only,
            };
            // The next candidate only when the tenant holds too many classes for this one.
            let mut id = client.register(0, &object, &opts);
            for &c in &classes[1..] {
                if !matches!(&id, Err(e) if e.code() == Some(ErrorCode::NoSpace)) {
                    break;
                }
                opts.class = c;
                id = client.register(0, &object, &opts);
            }
            let id = id?;
            Answer::new(format!("{id}\n"), json!({ "id": id, "name": opts.name }))
        }
        ClientCommand::Offload(OffloadCommand::Ls) => {
            let mut client = client;
            let list = client.list(0)?;
            let mut text = String::from("id\tclass\ttenant\tro\tinsns\tname\n");
            let mut rows = Vec::new();
            for o in list {
                text += &format!(
                    "{}\t{}\t{}\t{}\t{}\t{}{}\n",
                    o.id,
                    o.class,
                    o.tenant,
                    if o.read_only { "yes" } else { "no" },
                    o.insn_count,
                    crate::program::printable(&o.name),
                    if o.served {
                        ""
                    } else {
                        "\t(not served by the dataplane: see its log)"
                    }
                );
                rows.push(json!({
                    "id": o.id,
                    "class": o.class,
                    "tenant": o.tenant,
                    "read_only": o.read_only,
                    "insns": o.insn_count,
                    "name": o.name,
                    "served": o.served,
                }));
            }
            Answer::new(text, json!({ "offloads": rows }))
        }
        ClientCommand::Offload(OffloadCommand::Show { id }) => {
            let mut client = client;
            let list = client.list(0)?;
            let stats = client.server_stats(0)?;
            offload_show(&list, &stats, *id)?
        }
        ClientCommand::Offload(OffloadCommand::Dump { id }) => {
            let mut client = client;
            let (insns, digest) = client.fetch_program(0, *id)?;
            let program = naam_core::elf::Program::from_insns(format!("offload {id}"), insns);
            let verified = naam_core::verifier::verify(&program, &Default::default())
                .map_err(|e| anyhow::anyhow!("offload {id}: the program the server sent does not verify here: instruction {}: {}", e.insn, e.reason))?;
            let lines = naam_core::vm::disassemble(&verified);
            let text = lines
                .iter()
                .map(|(i, t)| format!("{i:5}: {t}\n"))
                .collect::<String>();
            let insns: Vec<_> = lines
                .iter()
                .map(|(i, t)| json!({ "index": i, "text": t }))
                .collect();
            Answer::new(
                format!(
                    "offload {id}: {} instructions, digest {digest:016x}\n{text}",
                    verified.insn_count()
                ),
                json!({ "id": id, "digest": format!("{digest:016x}"), "insns": insns }),
            )
        }
        ClientCommand::Offload(OffloadCommand::Rm { id }) => {
            let mut client = client;
            client.unregister(0, *id)?;
            Answer::new(String::new(), json!({ "id": id, "removed": true }))
        }
        ClientCommand::Call { id, class, args } => {
            let mut client = client;
            if g.local {
                // A handler run here reaches the server's regions with one-sided ops: learn
                // the keys of the applications' regions (an app the server lacks is skipped).
                for app in crate::bundled::APPS {
                    let _ = client.describe(0, app);
                }
            }
            let args = encode_args(args)?;
            // The offload's own entry decides: a class it is not on would be refused by the
            // server, or go to a port nobody serves (past `--classes`) and time out.
            let list = client.list(0)?;
            let o = list
                .iter()
                .find(|o| o.id == *id)
                .with_context(|| format!("the server has no offload {id} (naam offload ls)"))?;
            if !o.served {
                bail!(
                    "offload {id} is the host agent's but the dataplane does not run it \
                     (its class {} past the dataplane's --classes, refused by its verifier, or \
                     not fetched: see the dataplane's log)",
                    o.class
                );
            }
            if let Some(c) = class.filter(|c| *c != o.class) {
                return Err(crate::ClientError::WrongClass {
                    offload: *id,
                    class: c,
                    belongs: o.class,
                }
                .into());
            }
            let reply = client.call(*id, o.class, &args);
            // A read-only offload changes nothing: its failure leaves no outcome unknown.
            let reply = if o.read_only {
                reply.context(ReadOnlyCall(*id))?
            } else {
                reply?
            };
            let at = reply.executed_at.name();
            let steps = reply.steps;
            let output = reply.into_output()?;
            let hex = to_hex(&output);
            let mut text = format!("executed at {at} in {steps} steps\noutput {hex}\n");
            let words: Vec<u64> = if !output.is_empty() && output.len() % 8 == 0 {
                output
                    .chunks_exact(8)
                    .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
                    .collect()
            } else {
                Vec::new()
            };
            if !words.is_empty() {
                let w: Vec<String> = words.iter().map(u64::to_string).collect();
                text += &format!("u64 {}\n", w.join(" "));
            }
            Answer::new(
                text,
                json!({ "executed_at": at, "steps": steps, "output": hex, "u64": words }),
            )
        }
        ClientCommand::Stats => {
            let mut client = client;
            name_values(client.server_stats(0)?)
        }
        ClientCommand::Describe { name } => {
            let mut client = client;
            name_values(client.describe(0, name)?)
        }
    })
}

/// `offload add --read-only` of a program that may ask for a WRITE, CAS or FAA is accepted
/// (the server refuses those steps, `permission_denied`), but the operator hears of it now,
/// not from the first failing call. A program that does not load or verify here is left for
/// the server to refuse with its reason.
fn warn_if_it_writes(object: &[u8], section: Option<&str>) {
    use std::io::Write as _;
    let Ok(program) = naam_core::elf::load_program(object, section) else {
        return;
    };
    let Ok(v) = naam_core::verifier::verify(&program, &Default::default()) else {
        return;
    };
    if v.first_mutating_op().is_some() {
        // Not `eprintln!`, which panics when stderr is closed.
        let _ = writeln!(
            std::io::stderr(),
            "naam: warning: {}: {}",
            crate::program::printable(v.name()),
            crate::program::op_kinds(&v)
        );
    }
}

/// The classes `naam offload add` tries, in order, when no `--class` is given: the lowest
/// whose offloads are all the tenant's served ones and of the same mode (a class goes to the
/// clients only when every offload on it is read-only), the lowest no offload uses (a new
/// one), and the lowest the tenant holds (a new class is refused past the host agent's
/// `--max-classes-per-tenant`).
fn default_classes(client: &mut Client, read_only: bool) -> anyhow::Result<Vec<u16>> {
    let tenant = client.config().tenant;
    let list = client.list(0)?;
    let mine = || list.iter().filter(|o| o.tenant == tenant && o.served);
    let used = |c: u16| list.iter().any(|o| o.class == c);
    let same_mode = mine()
        .map(|o| o.class)
        .filter(|&c| {
            mine()
                .filter(|o| o.class == c)
                .all(|o| o.read_only == read_only)
        })
        .min();
    let new = (0..=u16::MAX).find(|&c| !used(c));
    let held = mine().map(|o| o.class).min();
    let mut classes: Vec<u16> = Vec::new();
    for c in [same_mode, new, held].into_iter().flatten() {
        if !classes.contains(&c) {
            classes.push(c);
        }
    }
    anyhow::ensure!(
        !classes.is_empty(),
        "every class holds another tenant's offload"
    );
    Ok(classes)
}

/// "name value" lines, or one JSON object.
fn name_values(pairs: Vec<(String, u64)>) -> Answer {
    let text = pairs.iter().map(|(n, v)| format!("{n} {v}\n")).collect();
    let map: serde_json::Map<String, serde_json::Value> =
        pairs.into_iter().map(|(n, v)| (n, v.into())).collect();
    Answer::new(text, serde_json::Value::Object(map))
}

/// `naam offload show`: the LIST entries joined with the dataplane's per-offload counters
/// (`offload.ID.nic_*`) and its classes' placement (`class.C.placement`).
fn offload_show(
    list: &[crate::reply::OffloadInfo],
    stats: &[(String, u64)],
    id: Option<u32>,
) -> anyhow::Result<Answer> {
    use serde_json::json;
    let stat = |name: String| stats.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let chosen: Vec<_> = list
        .iter()
        .filter(|o| id.is_none_or(|i| o.id == i))
        .collect();
    if let (Some(i), true) = (id, chosen.is_empty()) {
        bail!("no offload with id {i}");
    }
    let mut text = String::new();
    let mut rows = Vec::new();
    for o in chosen {
        // Where it ran: the NIC's counters, and the host agent's as the dataplane last read
        // them (a quarter of a second old at most).
        let at = |loc: &str| {
            let c = |n: &str| stat(format!("offload.{}.{loc}_{n}", o.id)).unwrap_or(0);
            let (runs, steps, errors, run_ns) = (c("runs"), c("steps"), c("errors"), c("run_ns"));
            let mean_ns = (run_ns > 0 && runs > 0).then(|| run_ns / runs);
            let text = format!(
                "\t{loc}: runs {runs}  steps {steps}  errors {errors}  mean {}\n",
                mean_ns.map_or("-".to_string(), |n| format!("{n} ns"))
            );
            let doc = json!({ "runs": runs, "steps": steps, "errors": errors, "run_ns": run_ns, "mean_ns": mean_ns });
            (text, doc)
        };
        let ((nic_text, nic), (host_text, host)) = (at("nic"), at("host"));
        // The dataplane reports placement only for classes in use or moved from home.
        let placed = stat(format!("class.{}.placement", o.class))
            .and_then(|v| u8::try_from(v).ok())
            .and_then(naam_core::wire::Location::from_u8)
            .map(|l| l.name());
        text += &format!(
            "{}: {}  tenant {}  class {}{}{}\n\tinsns {}  worst-case path {}  placed {}\n{nic_text}{host_text}",
            o.id,
            crate::program::printable(&o.name),
            o.tenant,
            o.class,
            if o.read_only { "  read-only" } else { "" },
            if o.served {
                ""
            } else {
                "  not served by the dataplane (see its log)"
            },
            o.insn_count,
            o.worst_case,
            placed.unwrap_or("unknown"),
        );
        rows.push(json!({
            "id": o.id,
            "name": o.name,
            "tenant": o.tenant,
            "class": o.class,
            "read_only": o.read_only,
            "insns": o.insn_count,
            "worst_case": o.worst_case,
            "served": o.served,
            "placed": placed,
            "nic": nic,
            "host": host,
        }));
    }
    let json = match id {
        Some(_) => rows.into_iter().next().unwrap_or_default(),
        None => json!({ "offloads": rows }),
    };
    Ok(Answer::new(text, json))
}

#[cfg(test)]
mod tests {
    use super::encode_args;

    /// A call timed out leaves its outcome unknown (exit 3), unless its offload is read-only.
    #[test]
    fn a_read_only_call_that_timed_out_changed_nothing() {
        let cmd = super::ClientCommand::Call {
            id: 16,
            class: None,
            args: Vec::new(),
        };
        let timeout = || crate::ClientError::Timeout {
            request_id: 1,
            to: "127.0.0.1:7000".parse().unwrap(),
            awaited: naam_core::wire::Kind::AmReply,
            attempts: 6,
            waited: std::time::Duration::from_secs(2),
            refused: None,
            unmatched: 0,
        };
        assert!(super::outcome_unknown(&cmd, &timeout().into()));
        let read_only = anyhow::Error::from(timeout()).context(super::ReadOnlyCall(16));
        assert!(!super::outcome_unknown(&cmd, &read_only));
        assert!(format!("{read_only:#}").starts_with("calling read-only offload 16: "));
    }

    /// A command refused because the server restarted while it was under way is not blamed
    /// on the key file (probe 12: "its keys do not include the one in admin.key").
    #[test]
    fn a_refusal_by_a_restarted_server_is_not_blamed_on_the_key() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            g: super::GlobalArgs,
        }
        let g = Cli::parse_from(["naam", "--key-file", "/nonexistent/admin.key"]).g;
        let refused = |detail: &str| {
            let e = crate::ClientError::Server {
                request_id: 1,
                code: super::ErrorCode::Unauthorized,
                detail: detail.into(),
            };
            format!("{:#}", super::explain(&g, anyhow::Error::new(e)))
        };
        let restart = refused(naam_core::auth::Refusal::BeforeStart.detail());
        assert!(
            restart.contains("under way: it may or may not have run before the restart"),
            "{restart}"
        );
        assert!(!restart.contains("keys do not include"), "{restart}");
        let bad = refused(naam_core::auth::Refusal::UnknownKey.detail());
        assert!(bad.contains("refused the request"), "{bad}");
    }

    #[test]
    fn call_arguments_encode_little_endian_in_order() {
        let a: Vec<String> = ["u32:4", "u32:0", "u64:0x80", "hex:ff00", "str:ab", "u8:7"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let b = encode_args(&a).unwrap();
        assert_eq!(
            b,
            [4, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, b'a', b'b', 7]
        );
        for bad in [
            "u32", "u8:256", "u32:x", "hex:f", "hex:zz", "f64:1", "hex:€a", "hex:aéb",
        ] {
            assert!(encode_args(&[bad.to_string()]).is_err(), "{bad}");
        }
        // Every refusal names the argument.
        for bad in ["u64:-1", "u8:x", "u32:0xzz"] {
            let e = format!("{:#}", encode_args(&[bad.to_string()]).unwrap_err());
            assert!(e.contains(bad), "{bad}: {e}");
        }
        // ... and the range of its own width, in words (not the u64 range, nor Rust's
        // "out of range integral type conversion attempted").
        for (bad, range) in [
            ("u8:256", "0 to 255"),
            ("u32:-1", "0 to 2^32 - 1"),
            ("u32:0x100000000", "0 to 2^32 - 1"),
            ("u64:18446744073709551616", "0 to 2^64 - 1"),
        ] {
            let e = format!("{:#}", encode_args(&[bad.to_string()]).unwrap_err());
            assert!(e.contains(range) && !e.contains("integral"), "{bad}: {e}");
        }
        assert_eq!(
            encode_args(&["u8:255".into(), "u32:0xffffffff".into()]).unwrap(),
            [255, 255, 255, 255, 255]
        );
    }
}
