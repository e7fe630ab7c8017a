//! Entry points for the cargo-fuzz targets in `fuzz/` (see docs/fuzzing.md):
//! the node's decoders of text and bytes it did not write itself, which are
//! private to the crate otherwise. Not a stable API: hidden from the docs,
//! only the fuzz targets use it, and it changes with the code it exposes.
//!
//! * Receipt handles ([`ReceiptHandle`]: `FromStr`, `Display`) and
//!   transaction ids ([`parse_transaction_id`], [`transaction_id`]): text
//!   clients send back.
//! * Filter expressions ([`Filter::parse_tags`], [`Filter::parse_sql`],
//!   [`Filter::matches`]): text clients subscribe with.
//! * Stored keys and values ([`codec`]): bytes read from disk.

pub use crate::consumer::{Filter, FilterError, MalformedHandle, ReceiptHandle};
pub use crate::error::NodeError;
pub use crate::storage::codec;
pub use crate::storage::{
    DEDUP_ID_BYTES, GroupCursor, GroupQueueKey, OffsetState, OpenTransaction, StorageError,
};
pub use crate::transactions::{parse_transaction_id, transaction_id};
