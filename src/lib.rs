//! woesafe: write Windows installation ISOs to USB sticks, loop devices and image files, from a worker that
//! lives in its own PID and mount namespaces so that nothing it mounts or attaches outlives it.

pub mod boot;
pub mod cli;
pub mod copy;
pub mod media;
pub mod sys;
pub mod target;
pub mod worker;
pub mod write;
