use super::peer::PeerWatch;
use super::*;
use crate::error::GoneReason;

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

#[test]
fn handles_move_to_worker_threads() {
    // Queue pairs and memories are per worker (Send); links and publishers are shared.
    send::<ShmQp>();
    send::<ShmMemory>();
    send::<ShmHost>();
    send_sync::<ShmLink>();
    send_sync::<LoadPublisher>();
    send_sync::<ShmRegion>();
}

#[test]
fn gone_reasons_round_trip_through_the_flag_word() {
    for r in [GoneReason::SocketClosed, GoneReason::Transport] {
        assert_eq!(PeerWatch::decode(PeerWatch::encode(r)), r);
    }
}
