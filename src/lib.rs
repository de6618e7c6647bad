//! The `naam-rs` program's own parts: the demo, the main job of a local deployment
//! (`cargo run --release -- demo`). The deployment it starts comes from `naam-deploy`; its
//! workload generator, plots and result files from the experiments' shared harness in
//! `naam-bench`.

pub mod demo;
