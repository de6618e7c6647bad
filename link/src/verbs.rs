//! RC queue pairs through `sideway` (being written).
