//! Both decoders on arbitrary packets: no panic, and anything accepted
//! re-encodes to a packet that decodes to the same message.
#![no_main]

use caffe_sandbox_protocol::{decode_from_worker, decode_to_worker, encode, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(m) = decode_from_worker(data, &limits) {
        let again = encode(&m).expect("accepted message re-encodes");
        assert_eq!(decode_from_worker(&again, &limits).unwrap(), m);
    }
    if let Ok(m) = decode_to_worker(data, &limits) {
        let again = encode(&m).expect("accepted message re-encodes");
        assert_eq!(decode_to_worker(&again, &limits).unwrap(), m);
    }
});
