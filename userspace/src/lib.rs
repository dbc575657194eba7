//! oxvs userspace: the switch library. Modules are named for their OVS
//! counterparts (see docs/ARCHITECTURE.md).
pub mod dpif;
pub mod netdev;
