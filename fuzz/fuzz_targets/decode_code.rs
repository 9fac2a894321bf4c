//! Any string: decoding never panics, and whatever decodes encodes back to
//! the same string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyurl_domain::CodeCodec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(codec) = CodeCodec::new(b"fuzzing secret of 32 bytes......", 7) else { return };
    if let Some(id) = codec.decode(text) {
        assert_eq!(codec.encode(id).as_str(), text);
    }
});
