#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lookout::fuzzing::web_config(data));
