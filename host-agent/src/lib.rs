//! The NAAM host agent: owns the data and runs the messages the NIC hands it (DESIGN §2, §6).
