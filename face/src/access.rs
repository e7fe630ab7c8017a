//! Who may use the client protocols: the access keys a deployment gives out
//! (AccessKey id → secret), or the development mode that lets anyone in.
//!
//! The HTTP face verifies the Aliyun MQ signature (HMAC-SHA1 with the
//! secret), STOMP compares `login` / `passcode` with a key id and its secret.
//! The keys come from the file the topology names (`[access] keys_file`),
//! never from the topology itself.

use std::collections::HashMap;
use std::sync::Arc;

/// Access key ids and their secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AccessKeys {
    secrets: HashMap<String, String>,
}

impl std::fmt::Debug for AccessKeys {
    /// Names the key ids, never the secrets.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        ids.sort_unstable();
        formatter
            .debug_struct("AccessKeys")
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

impl AccessKeys {
    pub fn new(keys: impl IntoIterator<Item = (String, String)>) -> Self {
        AccessKeys {
            secrets: keys.into_iter().collect(),
        }
    }

    /// The secret of access key `id`, if the key exists.
    pub fn secret(&self, id: &str) -> Option<&str> {
        self.secrets.get(id).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// How a face decides who may call it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Authentication {
    /// Development mode: anonymous clients are accepted and credentials are
    /// not checked (each face logs this when it starts).
    #[default]
    Development,
    /// Every request must carry one of these keys, proven with its secret.
    Keys(Arc<AccessKeys>),
}

impl Authentication {
    /// The keys to check against; `None` in development mode.
    pub fn keys(&self) -> Option<&AccessKeys> {
        match self {
            Authentication::Development => None,
            Authentication::Keys(keys) => Some(keys),
        }
    }
}
