//! `woesafe recover`: find what crashed WoeUSB, WoeUSB-ng and woesafe runs left behind. Snapshot (read the
//! system) → plan (pure) → apply.

pub mod apply;
pub mod fuse;
pub mod patterns;
pub mod plan;
pub mod shadow;
pub mod snapshot;
