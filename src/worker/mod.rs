//! Supervisor ↔ worker: spawning the worker as PID 1 of new PID + mount namespaces, its init, the frames.

pub mod init;
pub mod spawn;
pub mod watchdog;

/// The hidden first argument that turns the binary into the worker.
pub const WORKER_ARG: &str = "__woesafe_worker";
