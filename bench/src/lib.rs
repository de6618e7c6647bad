//! NAAM benchmarks and experiments (DESIGN §8). Benchmarks never run inside the test suite.
