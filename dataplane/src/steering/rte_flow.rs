//! `RteFlowSteering`: steering rules on the NIC's embedded switch through DPDK `rte_flow`, as
//! the mlx5 PMD programs BlueField-2's eSwitch.
//!
//! - [`Target::NicQueue`]: an ingress rule on the uplink port, `ETH / IPV4 / UDP dst = base +
//!   class → QUEUE q, COUNT` (the NIC worker polling queue q receives the class);
//! - [`Target::Host`]: a `transfer` rule created on the transfer proxy
//!   (`rte_flow_pick_transfer_proxy`), `REPRESENTED_PORT(uplink) / ETH / IPV4 / UDP dst →
//!   REPRESENTED_PORT(host PF representor), COUNT`: the switch delivers the message to the
//!   host without touching an Arm core;
//! - [`Target::Drop`]: `... → DROP, COUNT`.
//!
//! Only exact UDP destination ports are matched (a masked [`Match`] is refused): one rule per
//! class is what the hardware tables handle best. Per-rule hardware counters need
//! `rte_flow_query`, which the bindings do not wrap yet, so `counters()` returns `None` and
//! `capabilities().counters` is false; the SoftSwitch in the receive path still counts what
//! reaches the cores. On this platform no vdev supports rte_flow: [`RteFlowSteering::open`]
//! probes with `rte_flow_validate`, gets `ENOSYS`, and the dataplane logs the reason and
//! falls back to the SoftSwitch.

use super::{Capabilities, Match, RuleCounters, RuleId, Steering, SteeringError, Target};
use naam_dpdk::flow::{self, Flow, FlowActions, FlowAttr, FlowItem, FlowPattern};
use naam_dpdk::{DpdkError, Eal, EthPort, PortId, QueueId};
use std::collections::BTreeMap;

const BACKEND: &str = "rte_flow";

/// Where the rules go.
#[derive(Clone)]
pub struct RteFlowPorts {
    /// The port messages arrive on (the uplink / physical port, `p0`).
    pub uplink: EthPort,
    /// The port transfer rules are created on (`rte_flow_pick_transfer_proxy(uplink)`).
    pub proxy: EthPort,
    /// The host PF representor (`pf0hpf`, EAL `representor=[65535]`), if the host is reachable
    /// through the switch; `Target::Host` is refused without it.
    pub host_representor: Option<PortId>,
}

/// One rule as rte_flow structures: what [`RteFlowSteering`] installs. Pure, so it is unit
/// tested field by field without a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub attr: FlowAttr,
    pub items: Vec<FlowItem>,
    pub actions: Vec<flow::FlowAction>,
    /// Whether the rule goes on the transfer proxy (true) or the uplink (false).
    pub on_proxy: bool,
}

/// Builds the rule for `m → target`.
pub fn rule_spec(
    m: &Match,
    target: Target,
    uplink: PortId,
    host_representor: Option<PortId>,
) -> Result<RuleSpec, SteeringError> {
    if m.mask != u16::MAX {
        return Err(SteeringError::Unsupported {
            backend: BACKEND,
            reason: format!(
                "masked port match {:#06x}/{:#06x}: rte_flow rules match one UDP port each",
                m.dst_port, m.mask
            ),
        });
    }
    let l3_l4 = [
        FlowItem::Eth {
            dst: None,
            src: None,
            ether_type: None,
        },
        FlowItem::Ipv4 {
            src: None,
            dst: None,
        },
        FlowItem::Udp {
            src_port: None,
            dst_port: Some(m.dst_port),
        },
    ];
    Ok(match target {
        Target::NicQueue(q) => RuleSpec {
            attr: FlowAttr {
                ingress: true,
                ..FlowAttr::default()
            },
            items: l3_l4.to_vec(),
            actions: vec![flow::FlowAction::Queue(QueueId(q)), flow::FlowAction::Count],
            on_proxy: false,
        },
        Target::Drop => RuleSpec {
            attr: FlowAttr {
                ingress: true,
                ..FlowAttr::default()
            },
            items: l3_l4.to_vec(),
            actions: vec![flow::FlowAction::Drop, flow::FlowAction::Count],
            on_proxy: false,
        },
        Target::Host => {
            let repr = host_representor.ok_or_else(|| SteeringError::Unsupported {
                backend: BACKEND,
                reason: "no host PF representor configured (EAL representor=[65535])".into(),
            })?;
            let mut items = vec![FlowItem::RepresentedPort(uplink)];
            items.extend_from_slice(&l3_l4);
            RuleSpec {
                attr: FlowAttr {
                    transfer: true,
                    ..FlowAttr::default()
                },
                items,
                actions: vec![
                    flow::FlowAction::RepresentedPort(repr),
                    flow::FlowAction::Count,
                ],
                on_proxy: true,
            }
        }
    })
}

/// Steering rules in the NIC's switch.
pub struct RteFlowSteering {
    ports: RteFlowPorts,
    staged: BTreeMap<RuleId, (Match, Target)>,
    installed: BTreeMap<RuleId, ((Match, Target), Flow)>,
    next_id: u32,
}

fn backend_err(op: &'static str, e: DpdkError) -> SteeringError {
    SteeringError::Backend {
        backend: BACKEND,
        op,
        source: Box::new(e),
    }
}

impl RteFlowSteering {
    /// Probes the uplink: validates a representative rule. `Err(Unsupported)` names why the
    /// hardware cannot steer here (the caller falls back to the SoftSwitch and logs it).
    /// `proxy` is the configured port `rte_flow_pick_transfer_proxy` names for the uplink
    /// when it is not the uplink itself (on BlueField the PF's port owns the switch).
    pub fn open(
        eal: &Eal,
        uplink: EthPort,
        proxy: Option<EthPort>,
        host_representor: Option<PortId>,
        probe_port: u16,
    ) -> Result<Self, SteeringError> {
        let proxy_id = flow::pick_transfer_proxy(eal, uplink.id()).unwrap_or(uplink.id());
        let proxy = match proxy {
            Some(p) if p.id() == proxy_id => p,
            _ if proxy_id == uplink.id() => uplink.clone(),
            _ => {
                return Err(SteeringError::Unsupported {
                    backend: BACKEND,
                    reason: format!(
                        "the transfer proxy of port {} is port {}, which is not configured",
                        uplink.id().0,
                        proxy_id.0
                    ),
                })
            }
        };
        let ports = RteFlowPorts {
            uplink,
            proxy,
            host_representor,
        };
        let spec = rule_spec(
            &Match::port(probe_port),
            Target::NicQueue(0),
            ports.uplink.id(),
            None,
        )?;
        let (pattern, actions) = (
            FlowPattern::new(&spec.items),
            FlowActions::new(&spec.actions),
        );
        match flow::validate(&ports.uplink, &spec.attr, &pattern, &actions) {
            Ok(()) => Ok(Self {
                ports,
                staged: BTreeMap::new(),
                installed: BTreeMap::new(),
                next_id: 0,
            }),
            Err(e) if e.is_unsupported() => Err(SteeringError::Unsupported {
                backend: BACKEND,
                reason: format!(
                    "port {} ({}) does not support rte_flow: {e}",
                    ports.uplink.id().0,
                    ports.uplink.info().driver_name
                ),
            }),
            Err(e) => Err(backend_err("rte_flow_validate (probe)", e)),
        }
    }

    fn install(&self, m: &Match, t: Target) -> Result<Flow, SteeringError> {
        let spec = rule_spec(m, t, self.ports.uplink.id(), self.ports.host_representor)?;
        let port = if spec.on_proxy {
            &self.ports.proxy
        } else {
            &self.ports.uplink
        };
        let (pattern, actions) = (
            FlowPattern::new(&spec.items),
            FlowActions::new(&spec.actions),
        );
        Flow::create(port, &spec.attr, &pattern, &actions)
            .map_err(|e| backend_err("rte_flow_create", e))
    }
}

impl Steering for RteFlowSteering {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: BACKEND,
            hardware: true,
            max_rules: 1 << 16,
            counters: false,
            unavailable: None,
        }
    }

    fn insert(&mut self, m: Match, target: Target) -> Result<RuleId, SteeringError> {
        // Refuse what could never be installed now, not at commit.
        rule_spec(
            &m,
            target,
            self.ports.uplink.id(),
            self.ports.host_representor,
        )?;
        if let Some((id, _)) = self
            .staged
            .iter()
            .find(|(_, (s, _))| s.dst_port == m.dst_port)
        {
            return Err(SteeringError::Overlap {
                port: m.dst_port,
                mask: m.mask,
                existing: *id,
            });
        }
        let id = RuleId(self.next_id);
        self.next_id += 1;
        self.staged.insert(id, (m, target));
        Ok(id)
    }

    fn update(&mut self, id: RuleId, target: Target) -> Result<(), SteeringError> {
        let (m, t) = self.staged.get_mut(&id).ok_or(SteeringError::NoRule(id))?;
        rule_spec(
            m,
            target,
            self.ports.uplink.id(),
            self.ports.host_representor,
        )?;
        *t = target;
        Ok(())
    }

    fn remove(&mut self, id: RuleId) -> Result<(), SteeringError> {
        self.staged
            .remove(&id)
            .map(|_| ())
            .ok_or(SteeringError::NoRule(id))
    }

    /// Creates the new and changed rules first, then destroys the replaced ones, so a class is
    /// never without a rule in between (make-before-break).
    fn commit(&mut self) -> Result<(), SteeringError> {
        let mut fresh = BTreeMap::new();
        for (id, rule) in &self.staged {
            match self.installed.get(id) {
                Some((r, _)) if r == rule => {}
                _ => {
                    fresh.insert(*id, self.install(&rule.0, rule.1)?);
                }
            }
        }
        let old = std::mem::take(&mut self.installed);
        for (id, (rule, f)) in old {
            match (self.staged.get(&id), fresh.remove(&id)) {
                (Some(r), Some(nf)) => {
                    drop(f);
                    self.installed.insert(id, (*r, nf));
                }
                (Some(_), None) => {
                    self.installed.insert(id, (rule, f));
                }
                (None, _) => drop(f),
            }
        }
        for (id, f) in fresh {
            self.installed.insert(id, (self.staged[&id], f));
        }
        Ok(())
    }

    fn counters(&self, _id: RuleId) -> Option<RuleCounters> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use naam_dpdk::flow::{ActionConf, FlowAction, ItemSpec};

    #[test]
    fn nic_queue_rule_matches_the_class_port_and_sends_to_the_queue() {
        let spec = rule_spec(&Match::class(7000, 5), Target::NicQueue(3), PortId(0), None).unwrap();
        assert!(spec.attr.ingress && !spec.attr.transfer && !spec.on_proxy);
        assert_eq!(
            spec.actions,
            vec![FlowAction::Queue(QueueId(3)), FlowAction::Count]
        );
        let pattern = FlowPattern::new(&spec.items);
        assert_eq!(pattern.raw_items().len(), 4, "eth, ipv4, udp, end");
        match pattern.spec(2) {
            Some(ItemSpec::Udp(s, m)) => {
                let (spec_dst, mask_dst, mask_src) =
                    ({ s.hdr.dst_port }, { m.hdr.dst_port }, { m.hdr.src_port });
                assert_eq!(u16::from_be(spec_dst), 7005);
                assert_eq!(mask_dst, 0xffff);
                assert_eq!(mask_src, 0, "source port not matched");
            }
            _ => panic!("item 2 is not UDP"),
        }
        let actions = FlowActions::new(&spec.actions);
        match actions.conf(0) {
            Some(ActionConf::Queue(q)) => assert_eq!(q.index, 3),
            _ => panic!("action 0 is not QUEUE"),
        }
    }

    #[test]
    fn host_rule_is_a_transfer_rule_to_the_representor() {
        let spec = rule_spec(&Match::port(7001), Target::Host, PortId(0), Some(PortId(2))).unwrap();
        assert!(spec.attr.transfer && !spec.attr.ingress && spec.on_proxy);
        assert_eq!(spec.items[0], FlowItem::RepresentedPort(PortId(0)));
        assert_eq!(spec.actions[0], FlowAction::RepresentedPort(PortId(2)));
        let actions = FlowActions::new(&spec.actions);
        match actions.conf(0) {
            Some(ActionConf::Ethdev(e)) => assert_eq!(e.port_id, 2),
            _ => panic!("action 0 is not REPRESENTED_PORT"),
        }
    }

    #[test]
    fn unsupported_rules_are_refused_with_a_reason() {
        let host = rule_spec(&Match::port(7001), Target::Host, PortId(0), None).unwrap_err();
        assert!(host.to_string().contains("representor"), "{host}");
        let masked = rule_spec(
            &Match {
                dst_port: 7000,
                mask: 0xfff0,
            },
            Target::Drop,
            PortId(0),
            None,
        )
        .unwrap_err();
        assert!(masked.to_string().contains("masked"), "{masked}");
        let drop = rule_spec(&Match::port(7002), Target::Drop, PortId(0), None).unwrap();
        assert_eq!(drop.actions, vec![FlowAction::Drop, FlowAction::Count]);
    }
}
