//! The narrow layer over the kernel: loop devices, mount guards, locks, /proc readers.

pub mod argfile;
pub mod helper;
pub mod lock;
pub mod loopdev;
pub mod mount;
pub mod mountinfo;
pub mod procfs;
pub mod staging;
pub mod stop;
