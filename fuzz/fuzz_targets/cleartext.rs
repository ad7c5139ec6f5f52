//! Cleartext-signature framing: any bytes in, a body or an error out, never
//! a panic; the body is never longer than the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = simplestreams::openpgp::cleartext_body(data) {
        assert!(body.len() <= data.len());
    }
});
