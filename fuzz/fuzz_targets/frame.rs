//! cargo-fuzz target `frame`: the input as a stream of worker frames, decoded in both directions and round-tripped (woesafe::fuzzing::frame).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    woesafe::fuzzing::frame(data);
});
