use super::*;

#[test]
fn setup_message_round_trips_and_garbage_is_refused() {
    let desc = RegionDesc {
        id: 3,
        tenant: 9,
        len: 4096,
        perms: Perms::ALL,
        key: 0xabc,
    };
    let info = PeerInfo {
        qpn: 0x1234,
        psn: 0x55,
        lid: 7,
        gid: [9; 16],
        credit_addr: 0xdead_0000,
        credit_rkey: 42,
        ring_slots: 64,
        directory: vec![DirEntry {
            desc,
            offset: 0x7f00_0000,
            rkey: 77,
        }],
    };
    let b = info.encode();
    let back = PeerInfo::decode(&b).unwrap();
    assert_eq!(
        (back.qpn, back.psn, back.lid, back.gid),
        (0x1234, 0x55, 7, [9; 16])
    );
    assert_eq!(
        (back.credit_addr, back.credit_rkey, back.ring_slots),
        (0xdead_0000, 42, 64)
    );
    assert_eq!(back.directory, info.directory);
    assert!(PeerInfo::decode(&b[..b.len() - 1]).is_none(), "truncated");
    let mut bad = b.clone();
    bad[0] ^= 1;
    assert!(PeerInfo::decode(&bad).is_none(), "bad magic");
    let mut huge = b[..52].to_vec();
    huge[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(PeerInfo::decode(&huge).is_none(), "absurd entry count");
}
