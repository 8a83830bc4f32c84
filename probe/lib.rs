//! podprobe: measure a pod's network from inside its namespace and judge the
//! evidence. Measuring (I/O, in each area's `measure*` module) and judging
//! (pure, in `judge*`) are kept apart so judges can be tested on recorded
//! evidence and fed from live probes and captures alike.

pub mod capture;
pub mod checks;
pub mod cleanup;
pub mod cli;
pub mod clock;
pub mod dns;
pub mod docs;
pub mod doctor;
pub mod error;
pub mod flowchart;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod keepalive;
pub mod lab;
pub mod metrics;
pub mod net;
pub mod node;
pub mod report;
pub mod serve;
pub mod stats;
pub mod svc;
pub mod watch;

pub use error::{Error, Result};
