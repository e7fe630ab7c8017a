//! The Aliyun MQ HTTP API's request body parsers (publish `<Message>` and
//! ack `<ReceiptHandles>`) on arbitrary bytes: they must never panic (nor
//! run out of memory or time), and handles come out trimmed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_http::xml::{parse_publish, parse_receipt_handles};

fuzz_target!(|data: &[u8]| {
    let _ = parse_publish(data);
    if let Ok(handles) = parse_receipt_handles(data) {
        for handle in handles {
            assert_eq!(handle.trim(), handle, "handles come out trimmed");
        }
    }
});
