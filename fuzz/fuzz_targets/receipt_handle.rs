//! Receipt handles and transaction ids, which clients send back as opaque
//! text, as a router in proxy mode reads them to pick the region's node:
//! `meridian_face::receipt_handle_region` (`v1.<region>.<queue>.<offset>.
//! <attempt>.<deadline_ms>`) and `transaction_id_region` (`t1.<region>.<32
//! hex digits>`) on arbitrary UTF-8. They must never panic, and a region
//! they find is non-empty, holds no `.`, and is what the text names in the
//! format the node writes.
//!
//! The node's own parsers of the same text (`ReceiptHandle::from_str` and
//! `parse_transaction_id` in meridian-region-node), and their agreement with
//! these readers, are the target `node_receipt_handle`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_face::{receipt_handle_region, transaction_id_region};

/// The second `.`-separated field of `text` when the first is `version`.
fn second_field<'a>(text: &'a str, version: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(version)?.strip_prefix('.')?;
    Some(rest.split('.').next().unwrap_or(rest))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    let region = receipt_handle_region(text);
    if let Some(region) = region {
        assert!(!region.is_empty() && !region.contains('.'), "{region:?}");
    }
    assert_eq!(region, second_field(text, "v1").filter(|r| !r.is_empty()));
    if let Some(region) = region {
        let handle = format!("v1.{region}.3.17.1.1796000000000");
        assert_eq!(receipt_handle_region(&handle), Some(region));
    }

    let trimmed = text.trim();
    let region = transaction_id_region(text);
    if let Some(region) = region {
        assert!(!region.is_empty() && !region.contains('.'), "{region:?}");
    }
    assert_eq!(
        region,
        second_field(trimmed, "t1").filter(|r| !r.is_empty())
    );
    if let Some(region) = region {
        let id = format!(" t1.{region}.{} ", "ab".repeat(16));
        assert_eq!(transaction_id_region(&id), Some(region));
    }
});
