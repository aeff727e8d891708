//! cargo-fuzz target `loader`: the input as a UEFI loader (checked, examined, and checked against databases made
//! from its own hash, certificates and SBAT), as a dbx and a db, as SBAT text, and as a bundle of a loader with
//! its dbx, db and SbatLevel (woesafe::fuzzing::loader).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    woesafe::fuzzing::loader(data);
});
