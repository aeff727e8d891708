//! cargo-fuzz target `iso`: the input as an ISO image: opened, listed and every file read through the userspace reader (woesafe::fuzzing::iso).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    woesafe::fuzzing::iso(data);
});
