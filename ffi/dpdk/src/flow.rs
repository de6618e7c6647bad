//! `rte_flow`: match/action rules a device (on BlueField, the eSwitch through the mlx5 PMD)
//! applies in hardware. This module builds the C structures from plain Rust descriptions and
//! wraps validate/create/destroy/flush and `rte_flow_pick_transfer_proxy`; the steering
//! policy that decides which rules to install lives elsewhere.
//!
//! The structures are exposed read-only ([`FlowPattern::raw_items`], [`FlowPattern::spec`],
//! [`FlowActions::raw_actions`], [`FlowActions::conf`]) so that rule building can be checked
//! field by field without a device that supports rte_flow.

use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::ptr::NonNull;

use dpdk_sys::{
    rte_flow_action, rte_flow_action_ethdev, rte_flow_action_jump, rte_flow_action_queue,
    rte_flow_action_type as act, rte_flow_attr, rte_flow_error, rte_flow_item, rte_flow_item_eth,
    rte_flow_item_ethdev, rte_flow_item_ipv4, rte_flow_item_type as item, rte_flow_item_udp,
};

use super::error::{strerror, DpdkError};
use super::{Eal, EthPort, PortId, QueueId};

/// Rule attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowAttr {
    /// Flow group (table); group 0 is where matching starts.
    pub group: u32,
    /// Priority within the group (0 is highest).
    pub priority: u32,
    /// Applies to received traffic.
    pub ingress: bool,
    /// Applies to transmitted traffic.
    pub egress: bool,
    /// Programs the embedded switch (needs the transfer proxy port).
    pub transfer: bool,
}

impl FlowAttr {
    /// The C structure.
    pub fn to_raw(&self) -> rte_flow_attr {
        let mut raw = rte_flow_attr {
            group: self.group,
            priority: self.priority,
            ..Default::default()
        };
        raw.set_ingress(u32::from(self.ingress));
        raw.set_egress(u32::from(self.egress));
        raw.set_transfer(u32::from(self.transfer));
        raw
    }
}

/// One pattern item. Fields left `None` are not matched (mask 0); given fields are matched
/// exactly. An item with no field given matches any packet with that header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowItem {
    /// Ethernet header.
    Eth {
        /// Destination MAC.
        dst: Option<[u8; 6]>,
        /// Source MAC.
        src: Option<[u8; 6]>,
        /// EtherType (host order).
        ether_type: Option<u16>,
    },
    /// IPv4 header.
    Ipv4 {
        /// Source address.
        src: Option<Ipv4Addr>,
        /// Destination address.
        dst: Option<Ipv4Addr>,
    },
    /// UDP header.
    Udp {
        /// Source port.
        src_port: Option<u16>,
        /// Destination port (NAAM's steering class: `base + class`).
        dst_port: Option<u16>,
    },
    /// Traffic entering the switch from the port this port represents (transfer rules).
    RepresentedPort(PortId),
    /// Traffic entering the switch from this representor port itself (transfer rules).
    PortRepresentor(PortId),
}

/// The spec and mask an item points at.
#[derive(Clone, Copy)]
pub enum ItemSpec {
    /// No spec (match any).
    None,
    /// Ethernet spec and mask.
    Eth(rte_flow_item_eth, rte_flow_item_eth),
    /// IPv4 spec and mask.
    Ipv4(rte_flow_item_ipv4, rte_flow_item_ipv4),
    /// UDP spec and mask.
    Udp(rte_flow_item_udp, rte_flow_item_udp),
    /// Ethdev port spec and mask.
    Ethdev(rte_flow_item_ethdev, rte_flow_item_ethdev),
}

/// A pattern: the items, `END`-terminated, and the specs and masks they point at.
pub struct FlowPattern {
    items: Vec<rte_flow_item>,
    /// Complete before `items` is built and never changed after, so the pointers stay valid.
    specs: Vec<ItemSpec>,
}

fn mask_opt<const L: usize>(v: Option<[u8; L]>) -> ([u8; L], [u8; L]) {
    match v {
        Some(v) => (v, [0xff; L]),
        None => ([0; L], [0; L]),
    }
}

fn be16(v: Option<u16>) -> (u16, u16) {
    match v {
        Some(v) => (v.to_be(), 0xffff),
        None => (0, 0),
    }
}

fn be32(v: Option<Ipv4Addr>) -> (u32, u32) {
    match v {
        Some(a) => (u32::from(a).to_be(), 0xffff_ffff),
        None => (0, 0),
    }
}

impl FlowPattern {
    /// Builds the C pattern for `items` (an `END` item is appended).
    pub fn new(items: &[FlowItem]) -> FlowPattern {
        let mut specs = Vec::with_capacity(items.len());
        for it in items {
            let spec = match *it {
                FlowItem::Eth {
                    dst,
                    src,
                    ether_type,
                } if dst.is_some() || src.is_some() || ether_type.is_some() => {
                    let (d, dm) = mask_opt(dst);
                    let (s, sm) = mask_opt(src);
                    let (t, tm) = be16(ether_type);
                    let mut spec = rte_flow_item_eth::default();
                    let mut mask = rte_flow_item_eth::default();
                    spec.__bindgen_anon_1.hdr = dpdk_sys::rte_ether_hdr {
                        dst_addr: dpdk_sys::rte_ether_addr { addr_bytes: d },
                        src_addr: dpdk_sys::rte_ether_addr { addr_bytes: s },
                        ether_type: t,
                    };
                    mask.__bindgen_anon_1.hdr = dpdk_sys::rte_ether_hdr {
                        dst_addr: dpdk_sys::rte_ether_addr { addr_bytes: dm },
                        src_addr: dpdk_sys::rte_ether_addr { addr_bytes: sm },
                        ether_type: tm,
                    };
                    ItemSpec::Eth(spec, mask)
                }
                FlowItem::Ipv4 { src, dst } if src.is_some() || dst.is_some() => {
                    let (s, sm) = be32(src);
                    let (d, dm) = be32(dst);
                    let mut spec = rte_flow_item_ipv4::default();
                    let mut mask = rte_flow_item_ipv4::default();
                    spec.hdr.src_addr = s;
                    spec.hdr.dst_addr = d;
                    mask.hdr.src_addr = sm;
                    mask.hdr.dst_addr = dm;
                    ItemSpec::Ipv4(spec, mask)
                }
                FlowItem::Udp { src_port, dst_port }
                    if src_port.is_some() || dst_port.is_some() =>
                {
                    let (s, sm) = be16(src_port);
                    let (d, dm) = be16(dst_port);
                    let mut spec = rte_flow_item_udp::default();
                    let mut mask = rte_flow_item_udp::default();
                    spec.hdr.src_port = s;
                    spec.hdr.dst_port = d;
                    mask.hdr.src_port = sm;
                    mask.hdr.dst_port = dm;
                    ItemSpec::Udp(spec, mask)
                }
                FlowItem::RepresentedPort(p) | FlowItem::PortRepresentor(p) => ItemSpec::Ethdev(
                    rte_flow_item_ethdev { port_id: p.0 },
                    rte_flow_item_ethdev { port_id: 0xffff },
                ),
                _ => ItemSpec::None,
            };
            specs.push(spec);
        }
        let mut raw = Vec::with_capacity(items.len() + 1);
        for (it, spec) in items.iter().zip(&specs) {
            let type_ = match it {
                FlowItem::Eth { .. } => item::RTE_FLOW_ITEM_TYPE_ETH,
                FlowItem::Ipv4 { .. } => item::RTE_FLOW_ITEM_TYPE_IPV4,
                FlowItem::Udp { .. } => item::RTE_FLOW_ITEM_TYPE_UDP,
                FlowItem::RepresentedPort(_) => item::RTE_FLOW_ITEM_TYPE_REPRESENTED_PORT,
                FlowItem::PortRepresentor(_) => item::RTE_FLOW_ITEM_TYPE_PORT_REPRESENTOR,
            };
            // `specs` is complete: these pointers stay valid for the life of the pattern.
            let (spec_ptr, mask_ptr): (*const std::ffi::c_void, *const std::ffi::c_void) =
                match spec {
                    ItemSpec::None => (std::ptr::null(), std::ptr::null()),
                    ItemSpec::Eth(s, m) => {
                        (std::ptr::from_ref(s).cast(), std::ptr::from_ref(m).cast())
                    }
                    ItemSpec::Ipv4(s, m) => {
                        (std::ptr::from_ref(s).cast(), std::ptr::from_ref(m).cast())
                    }
                    ItemSpec::Udp(s, m) => {
                        (std::ptr::from_ref(s).cast(), std::ptr::from_ref(m).cast())
                    }
                    ItemSpec::Ethdev(s, m) => {
                        (std::ptr::from_ref(s).cast(), std::ptr::from_ref(m).cast())
                    }
                };
            raw.push(rte_flow_item {
                type_,
                spec: spec_ptr,
                last: std::ptr::null(),
                mask: mask_ptr,
            });
        }
        raw.push(rte_flow_item {
            type_: item::RTE_FLOW_ITEM_TYPE_END,
            spec: std::ptr::null(),
            last: std::ptr::null(),
            mask: std::ptr::null(),
        });
        FlowPattern { items: raw, specs }
    }

    /// The C items, `END` last.
    pub fn raw_items(&self) -> &[rte_flow_item] {
        &self.items
    }

    /// The spec and mask of item `index` (`None` past the given items).
    pub fn spec(&self, index: usize) -> Option<&ItemSpec> {
        self.specs.get(index)
    }
}

/// One action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAction {
    /// Deliver to a receive queue of this port (a NIC worker).
    Queue(QueueId),
    /// Drop.
    Drop,
    /// Count matches.
    Count,
    /// Continue matching in another group.
    Jump {
        /// The group.
        group: u32,
    },
    /// Let later rules act too.
    PassThru,
    /// Send to the port this ethdev represents (e.g. out to the host PF through `pf0hpf`).
    RepresentedPort(PortId),
    /// Send to this representor ethdev itself (to the Arm cores' queues).
    PortRepresentor(PortId),
}

/// The configuration an action points at.
#[derive(Clone, Copy)]
pub enum ActionConf {
    /// No configuration.
    None,
    /// Queue index.
    Queue(rte_flow_action_queue),
    /// Jump target.
    Jump(rte_flow_action_jump),
    /// Ethdev port.
    Ethdev(rte_flow_action_ethdev),
}

/// An action list, `END`-terminated, and the configurations it points at.
pub struct FlowActions {
    actions: Vec<rte_flow_action>,
    /// Complete before `actions` is built and never changed after.
    confs: Vec<ActionConf>,
}

impl FlowActions {
    /// Builds the C action list for `actions` (an `END` action is appended).
    pub fn new(actions: &[FlowAction]) -> FlowActions {
        let confs: Vec<ActionConf> = actions
            .iter()
            .map(|a| match *a {
                FlowAction::Queue(q) => ActionConf::Queue(rte_flow_action_queue { index: q.0 }),
                FlowAction::Jump { group } => ActionConf::Jump(rte_flow_action_jump { group }),
                FlowAction::RepresentedPort(p) | FlowAction::PortRepresentor(p) => {
                    ActionConf::Ethdev(rte_flow_action_ethdev { port_id: p.0 })
                }
                FlowAction::Drop | FlowAction::Count | FlowAction::PassThru => ActionConf::None,
            })
            .collect();
        let mut raw = Vec::with_capacity(actions.len() + 1);
        for (a, conf) in actions.iter().zip(&confs) {
            let type_ = match a {
                FlowAction::Queue(_) => act::RTE_FLOW_ACTION_TYPE_QUEUE,
                FlowAction::Drop => act::RTE_FLOW_ACTION_TYPE_DROP,
                FlowAction::Count => act::RTE_FLOW_ACTION_TYPE_COUNT,
                FlowAction::Jump { .. } => act::RTE_FLOW_ACTION_TYPE_JUMP,
                FlowAction::PassThru => act::RTE_FLOW_ACTION_TYPE_PASSTHRU,
                FlowAction::RepresentedPort(_) => act::RTE_FLOW_ACTION_TYPE_REPRESENTED_PORT,
                FlowAction::PortRepresentor(_) => act::RTE_FLOW_ACTION_TYPE_PORT_REPRESENTOR,
            };
            let conf_ptr: *const std::ffi::c_void = match conf {
                ActionConf::None => std::ptr::null(),
                ActionConf::Queue(c) => std::ptr::from_ref(c).cast(),
                ActionConf::Jump(c) => std::ptr::from_ref(c).cast(),
                ActionConf::Ethdev(c) => std::ptr::from_ref(c).cast(),
            };
            raw.push(rte_flow_action {
                type_,
                conf: conf_ptr,
            });
        }
        raw.push(rte_flow_action {
            type_: act::RTE_FLOW_ACTION_TYPE_END,
            conf: std::ptr::null(),
        });
        FlowActions {
            actions: raw,
            confs,
        }
    }

    /// The C actions, `END` last.
    pub fn raw_actions(&self) -> &[rte_flow_action] {
        &self.actions
    }

    /// The configuration of action `index`.
    pub fn conf(&self, index: usize) -> Option<&ActionConf> {
        self.confs.get(index)
    }
}

/// Builds the error for a failed rte_flow call: the driver's message if it gave one. `rc` is
/// the call's negative return code, or 0 for calls that report through `rte_errno` only.
fn flow_error(op: &'static str, rc: i32, err: &rte_flow_error) -> DpdkError {
    let errno = if rc < 0 {
        -rc
    } else {
        // SAFETY: reads the thread's rte_errno; no preconditions.
        unsafe { dpdk_sys::naam_errno() }
    };
    let message = if err.message.is_null() {
        strerror(errno)
    } else {
        // SAFETY: rte_flow sets `message` to a NUL-terminated string (static in the PMD or
        // the generic layer) that outlives this call; we copy it at once.
        let msg = unsafe { CStr::from_ptr(err.message) }.to_string_lossy();
        let text = strerror(errno);
        if msg.trim() == text.trim() {
            text
        } else {
            format!("{}: {text}", msg.trim())
        }
    };
    DpdkError { op, errno, message }
}

/// Asks the port's driver whether it would accept the rule, without creating it.
pub fn validate(
    port: &EthPort,
    attr: &FlowAttr,
    pattern: &FlowPattern,
    actions: &FlowActions,
) -> Result<(), DpdkError> {
    let raw_attr = attr.to_raw();
    let mut err = rte_flow_error::default();
    // SAFETY: the port is configured (we hold it); attr, pattern and actions are valid,
    // END-terminated, with specs and confs kept alive by `pattern`/`actions` for the call.
    let rc = unsafe {
        dpdk_sys::rte_flow_validate(
            port.id().0,
            &raw_attr,
            pattern.raw_items().as_ptr(),
            actions.raw_actions().as_ptr(),
            &mut err,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(flow_error("rte_flow_validate", rc, &err))
    }
}

/// An installed rule; destroyed when dropped (or by [`Flow::destroy`] to see the error).
pub struct Flow {
    port: EthPort,
    raw: Option<NonNull<dpdk_sys::rte_flow>>,
}

impl Flow {
    /// Installs a rule on `port` (for `transfer` rules: the transfer proxy port).
    pub fn create(
        port: &EthPort,
        attr: &FlowAttr,
        pattern: &FlowPattern,
        actions: &FlowActions,
    ) -> Result<Flow, DpdkError> {
        let raw_attr = attr.to_raw();
        let mut err = rte_flow_error::default();
        // SAFETY: as in `validate`; the driver copies what it keeps.
        let raw = unsafe {
            dpdk_sys::rte_flow_create(
                port.id().0,
                &raw_attr,
                pattern.raw_items().as_ptr(),
                actions.raw_actions().as_ptr(),
                &mut err,
            )
        };
        match NonNull::new(raw) {
            Some(raw) => Ok(Flow {
                port: port.clone(),
                raw: Some(raw),
            }),
            None => Err(flow_error("rte_flow_create", 0, &err)), // NULL: errno in rte_errno
        }
    }

    /// Removes the rule.
    pub fn destroy(mut self) -> Result<(), DpdkError> {
        self.destroy_inner()
    }

    fn destroy_inner(&mut self) -> Result<(), DpdkError> {
        let Some(raw) = self.raw.take() else {
            return Ok(());
        };
        let mut err = rte_flow_error::default();
        // SAFETY: `raw` was created on this port (kept open by `self.port`) and not yet
        // destroyed (`take` makes this the only destroy).
        let rc = unsafe { dpdk_sys::rte_flow_destroy(self.port.id().0, raw.as_ptr(), &mut err) };
        if rc == 0 {
            Ok(())
        } else {
            Err(flow_error("rte_flow_destroy", rc, &err))
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        if let Err(e) = self.destroy_inner() {
            tracing::warn!(port = self.port.id().0, error = %e, "destroying flow rule");
        }
    }
}

/// Removes every rule on the port. Rules still held as [`Flow`]s must be dropped or forgotten
/// first by the caller's design: their later destroy would fail (and be logged).
pub fn flush(port: &EthPort) -> Result<(), DpdkError> {
    let mut err = rte_flow_error::default();
    // SAFETY: the port is configured (we hold it).
    let rc = unsafe { dpdk_sys::rte_flow_flush(port.id().0, &mut err) };
    if rc == 0 {
        Ok(())
    } else {
        Err(flow_error("rte_flow_flush", rc, &err))
    }
}

/// The port on which `transfer` rules for `port` must be created (on BlueField: the PF's
/// port, which owns the eSwitch). Drivers without a switch return `port` itself or an error.
pub fn pick_transfer_proxy(_eal: &Eal, port: PortId) -> Result<PortId, DpdkError> {
    let mut proxy = port.0;
    let mut err = rte_flow_error::default();
    // SAFETY: EAL is initialised; `proxy` and `err` are writable; DPDK checks the port id.
    let rc = unsafe { dpdk_sys::rte_flow_pick_transfer_proxy(port.0, &mut proxy, &mut err) };
    if rc == 0 {
        Ok(PortId(proxy))
    } else {
        Err(flow_error("rte_flow_pick_transfer_proxy", rc, &err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::c_void;

    fn ptr<T>(r: &T) -> *const c_void {
        std::ptr::from_ref(r).cast()
    }

    #[test]
    fn attr_bits_land_in_the_bitfield() {
        let raw = FlowAttr {
            group: 3,
            priority: 7,
            ingress: false,
            egress: false,
            transfer: true,
        }
        .to_raw();
        assert_eq!((raw.group, raw.priority), (3, 7));
        assert_eq!((raw.ingress(), raw.egress(), raw.transfer()), (0, 0, 1));
        let raw = FlowAttr {
            ingress: true,
            ..Default::default()
        }
        .to_raw();
        assert_eq!((raw.ingress(), raw.egress(), raw.transfer()), (1, 0, 0));
    }

    #[test]
    fn steering_pattern_matches_the_class_port_exactly() {
        let pattern = FlowPattern::new(&[
            FlowItem::RepresentedPort(PortId(1)),
            FlowItem::Eth {
                dst: None,
                src: None,
                ether_type: None,
            },
            FlowItem::Ipv4 {
                src: None,
                dst: Some(Ipv4Addr::new(10, 0, 0, 2)),
            },
            FlowItem::Udp {
                src_port: None,
                dst_port: Some(7005),
            },
        ]);
        let items = pattern.raw_items();
        assert_eq!(items.len(), 5);
        let types: Vec<_> = items.iter().map(|i| i.type_).collect();
        assert_eq!(
            types,
            [
                item::RTE_FLOW_ITEM_TYPE_REPRESENTED_PORT,
                item::RTE_FLOW_ITEM_TYPE_ETH,
                item::RTE_FLOW_ITEM_TYPE_IPV4,
                item::RTE_FLOW_ITEM_TYPE_UDP,
                item::RTE_FLOW_ITEM_TYPE_END,
            ]
        );
        assert!(items.iter().all(|i| i.last.is_null()));

        let Some(ItemSpec::Ethdev(spec, mask)) = pattern.spec(0) else {
            panic!("ethdev spec")
        };
        assert_eq!((spec.port_id, mask.port_id), (1, 0xffff));
        assert_eq!((items[0].spec, items[0].mask), (ptr(spec), ptr(mask)));

        // Eth with nothing to match: no spec, matches any Ethernet frame.
        assert!(matches!(pattern.spec(1), Some(ItemSpec::None)));
        assert!(items[1].spec.is_null() && items[1].mask.is_null());

        let Some(ItemSpec::Ipv4(spec, mask)) = pattern.spec(2) else {
            panic!("ipv4 spec")
        };
        assert_eq!(
            { spec.hdr.dst_addr },
            u32::from(Ipv4Addr::new(10, 0, 0, 2)).to_be()
        );
        assert_eq!({ mask.hdr.dst_addr }, 0xffff_ffff);
        assert_eq!(({ spec.hdr.src_addr }, { mask.hdr.src_addr }), (0, 0));
        assert_eq!((items[2].spec, items[2].mask), (ptr(spec), ptr(mask)));

        let Some(ItemSpec::Udp(spec, mask)) = pattern.spec(3) else {
            panic!("udp spec")
        };
        assert_eq!({ spec.hdr.dst_port }, 7005u16.to_be());
        assert_eq!({ mask.hdr.dst_port }, 0xffff);
        assert_eq!(({ spec.hdr.src_port }, { mask.hdr.src_port }), (0, 0));
        assert_eq!((items[3].spec, items[3].mask), (ptr(spec), ptr(mask)));

        assert!(items[4].spec.is_null() && items[4].mask.is_null());
        assert!(pattern.spec(4).is_none());
    }

    #[test]
    fn eth_fields_are_masked_individually() {
        let pattern = FlowPattern::new(&[FlowItem::Eth {
            dst: Some([2, 0, 0, 0, 0, 9]),
            src: None,
            ether_type: Some(0x0800),
        }]);
        let Some(ItemSpec::Eth(spec, mask)) = pattern.spec(0) else {
            panic!("eth spec")
        };
        // SAFETY: both union members are plain bytes of the same header; `hdr` is the one
        // written.
        let (s, m) = unsafe { (spec.__bindgen_anon_1.hdr, mask.__bindgen_anon_1.hdr) };
        assert_eq!(s.dst_addr.addr_bytes, [2, 0, 0, 0, 0, 9]);
        assert_eq!(m.dst_addr.addr_bytes, [0xff; 6]);
        assert_eq!(
            (s.src_addr.addr_bytes, m.src_addr.addr_bytes),
            ([0; 6], [0; 6])
        );
        let (st, mt) = (s.ether_type, m.ether_type);
        assert_eq!((st, mt), (0x0800u16.to_be(), 0xffff));
    }

    #[test]
    fn actions_point_at_their_configuration() {
        let actions = FlowActions::new(&[
            FlowAction::Count,
            FlowAction::Queue(QueueId(3)),
            FlowAction::RepresentedPort(PortId(1)),
            FlowAction::PortRepresentor(PortId(0)),
            FlowAction::Jump { group: 1 },
            FlowAction::Drop,
        ]);
        let raw = actions.raw_actions();
        let types: Vec<_> = raw.iter().map(|a| a.type_).collect();
        assert_eq!(
            types,
            [
                act::RTE_FLOW_ACTION_TYPE_COUNT,
                act::RTE_FLOW_ACTION_TYPE_QUEUE,
                act::RTE_FLOW_ACTION_TYPE_REPRESENTED_PORT,
                act::RTE_FLOW_ACTION_TYPE_PORT_REPRESENTOR,
                act::RTE_FLOW_ACTION_TYPE_JUMP,
                act::RTE_FLOW_ACTION_TYPE_DROP,
                act::RTE_FLOW_ACTION_TYPE_END,
            ]
        );
        assert!(raw[0].conf.is_null() && raw[5].conf.is_null() && raw[6].conf.is_null());
        let Some(ActionConf::Queue(q)) = actions.conf(1) else {
            panic!("queue conf")
        };
        assert_eq!(q.index, 3);
        assert_eq!(raw[1].conf, ptr(q));
        let Some(ActionConf::Ethdev(e)) = actions.conf(2) else {
            panic!("ethdev conf")
        };
        assert_eq!(e.port_id, 1);
        assert_eq!(raw[2].conf, ptr(e));
        let Some(ActionConf::Ethdev(e)) = actions.conf(3) else {
            panic!("ethdev conf")
        };
        assert_eq!(e.port_id, 0);
        let Some(ActionConf::Jump(j)) = actions.conf(4) else {
            panic!("jump conf")
        };
        assert_eq!(j.group, 1);
        assert_eq!(raw[4].conf, ptr(j));
    }
}
