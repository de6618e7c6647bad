//! The link between the NIC dataplane and the host agent (DESIGN §6): registered regions,
//! one-sided READ / WRITE / CAS / FAA, send/receive rings and completion polling.
