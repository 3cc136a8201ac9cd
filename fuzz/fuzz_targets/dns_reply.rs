#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lookout::fuzzing::dns_reply(data));
