//! cargo-fuzz target `wim`: the input as a WIM: inspected, its split planned at three part sizes and every part read (woesafe::fuzzing::wim).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    woesafe::fuzzing::wim(data);
});
