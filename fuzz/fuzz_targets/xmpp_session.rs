//! See `petrel::fuzzing::xmpp_session` for the input layout and the checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = petrel::fuzzing::xmpp_session(data);
});
