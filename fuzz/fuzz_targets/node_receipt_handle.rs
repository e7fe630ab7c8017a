//! The node's readers of the opaque text clients send back, on arbitrary
//! UTF-8: `ReceiptHandle::from_str` (`v1.<region>.<queue>.<offset>.
//! <attempt>.<deadline_ms>`, region-node/src/consumer/handle.rs) and
//! `parse_transaction_id` (`t1.<region>.<32 hex digits>`,
//! region-node/src/transactions.rs). They must never panic, and:
//!
//! * what the node accepts, the router routes to the same region:
//!   `meridian_face::receipt_handle_region` / `transaction_id_region` find
//!   exactly the region the node read;
//! * parse∘print: an accepted handle or id prints (`Display`,
//!   `transaction_id`) as text that reads back to the same value, and an id
//!   prints as the input up to the case of its hex digits;
//! * print∘parse: a handle or id written with the input as its region
//!   (and numbers / a dedup id taken from the input's bytes) reads back to
//!   the same value exactly when that region is non-empty and has no `.`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_face::{receipt_handle_region, transaction_id_region};
use meridian_region_node::fuzzing::{
    DEDUP_ID_BYTES, ReceiptHandle, parse_transaction_id, transaction_id,
};

/// Whether the node can name `region` in a handle or id it writes.
fn valid_region(region: &str) -> bool {
    !region.is_empty() && !region.contains('.')
}

fn receipt_handles(text: &str, bytes: [u8; 24]) {
    match text.parse::<ReceiptHandle>() {
        Ok(handle) => {
            assert!(valid_region(&handle.region), "{handle:?}");
            assert_eq!(receipt_handle_region(text), Some(handle.region.as_str()));
            let printed = handle.to_string();
            assert_eq!(printed.parse::<ReceiptHandle>().as_ref(), Ok(&handle));
            assert_eq!(
                receipt_handle_region(&printed),
                Some(handle.region.as_str())
            );
        }
        Err(error) => {
            assert!(error.handle.chars().count() <= 128);
            assert!(text.starts_with(&error.handle));
            let _ = error.to_string();
        }
    }
    let number = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    let written = ReceiptHandle {
        region: text.to_owned(),
        queue_id: number(0) as i32,
        offset: number(8),
        attempt: (number(0) >> 32) as u32,
        deadline_ms: number(16) as i64,
    };
    let read = written.to_string().parse::<ReceiptHandle>();
    if valid_region(text) {
        assert_eq!(read, Ok(written));
    } else {
        assert!(read.is_err(), "{read:?}");
    }
}

fn transaction_ids(text: &str, bytes: [u8; 24]) {
    match parse_transaction_id(text) {
        Ok((region, dedup_id)) => {
            assert!(valid_region(&region), "{region:?}");
            assert_eq!(dedup_id.len(), DEDUP_ID_BYTES);
            assert_eq!(transaction_id_region(text), Some(region.as_str()));
            let printed = transaction_id(&region, &dedup_id);
            assert!(printed.eq_ignore_ascii_case(text.trim()), "{printed:?}");
            assert_eq!(
                parse_transaction_id(&printed).ok(),
                Some((region.clone(), dedup_id))
            );
            assert_eq!(transaction_id_region(&printed), Some(region.as_str()));
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
    let dedup_id = &bytes[..DEDUP_ID_BYTES];
    let read = parse_transaction_id(&transaction_id(text, dedup_id));
    if valid_region(text) {
        assert_eq!(read.ok(), Some((text.to_owned(), dedup_id.to_vec())));
    } else {
        assert!(read.is_err(), "{read:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Numbers for the handles and ids written with `text` as the region:
    // the input's first bytes, zero-padded.
    let mut bytes = [0; 24];
    let taken = data.len().min(bytes.len());
    bytes[..taken].copy_from_slice(&data[..taken]);
    receipt_handles(text, bytes);
    transaction_ids(text, bytes);
});
