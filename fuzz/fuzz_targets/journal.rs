#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| levee_node::fuzzing::journal(data));
