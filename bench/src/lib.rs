//! NAAM benchmarks and experiments (DESIGN §8). Benchmarks never run inside the test suite;
//! the unit tests here only check that the experiments measure the right thing.

pub mod load;
pub mod memif;
pub mod plot;
pub mod report;
pub mod scale;
pub mod ycsb;
