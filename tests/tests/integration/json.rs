//! Typed access to the scripts' JSON output (`serde_json` values), with errors
//! that say which field was missing or of the wrong type.

pub use serde_json::Value;

pub fn parse(text: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(text)?)
}

pub trait Access {
    fn field(&self, key: &str) -> anyhow::Result<&Value>;
    fn bool(&self) -> anyhow::Result<bool>;
    fn str(&self) -> anyhow::Result<&str>;
    fn u64(&self) -> anyhow::Result<u64>;
    fn array(&self) -> anyhow::Result<&[Value]>;
    fn object(&self) -> anyhow::Result<&serde_json::Map<String, Value>>;
}

impl Access for Value {
    fn field(&self, key: &str) -> anyhow::Result<&Value> {
        self.get(key)
            .ok_or_else(|| anyhow::anyhow!("the JSON output has no field {key:?}"))
    }

    fn bool(&self) -> anyhow::Result<bool> {
        self.as_bool()
            .ok_or_else(|| anyhow::anyhow!("expected a boolean, got {self}"))
    }

    fn str(&self) -> anyhow::Result<&str> {
        self.as_str()
            .ok_or_else(|| anyhow::anyhow!("expected a string, got {self}"))
    }

    fn u64(&self) -> anyhow::Result<u64> {
        self.as_u64()
            .ok_or_else(|| anyhow::anyhow!("expected a non-negative integer, got {self}"))
    }

    fn array(&self) -> anyhow::Result<&[Value]> {
        self.as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| anyhow::anyhow!("expected an array, got {self}"))
    }

    fn object(&self) -> anyhow::Result<&serde_json::Map<String, Value>> {
        self.as_object()
            .ok_or_else(|| anyhow::anyhow!("expected an object, got {self}"))
    }
}
