//! cargo-fuzz target `iso`: the input as an ISO image: opened, listed and every file read through the userspace
//! reader (woesafe::fuzzing::iso).
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};

fuzz_target!(|data: &[u8]| {
    woesafe::fuzzing::iso(data);
});

// libFuzzer's own changes, then (every other time) whatever looks like a UDF descriptor tag made valid again:
// most changes to a UDF image otherwise stop at the reader's CRC check.
fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let size = fuzzer_mutate(data, size, max_size);
    if seed % 2 == 0 {
        woesafe::fuzzing::repair_udf_tags(&mut data[..size]);
    }
    size
});
