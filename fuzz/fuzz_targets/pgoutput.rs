//! Feeds arbitrary bytes to the pgoutput decoder: it must return for every input, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strapi_io_bridge::pgoutput::fuzz_one(data);
});
