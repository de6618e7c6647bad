//! NAAM benchmarks and experiments (DESIGN §8). Benchmarks never run inside the test suite;
//! the unit tests here only check that the experiments measure the right thing.

pub mod all;
pub mod bars;
pub mod btree;
pub mod datapath;
pub mod fairness;
pub mod load;
pub mod memif;
pub mod overload;
pub mod placement;
pub mod plot;
pub mod procs;
pub mod program;
pub mod report;
pub mod scale;
pub mod shift;
pub mod soak;
pub mod ycsb;
