//! The NAAM dataplane: the process on the NIC's cores (DESIGN §2, §5, §7).

#![deny(unsafe_code)]

pub mod steering;
