//! The compact-encoding thresholds Redis exposes as settings
//! (`hash-max-listpack-entries`, `zset-max-listpack-value`,
//! `set-max-intset-entries`, ...) and the encoding name `OBJECT ENCODING`
//! reports from them.
//!
//! Tandem keeps every type in one (compact, decision 0033) in-memory
//! representation whatever its size, so these
//! settings change no storage: they only decide the encoding name a Redis
//! client or test reads (`listpack` until a collection outgrows the
//! thresholds, then `hashtable` / `skiplist`), which is Redis 7.0's rule.
//! The names are Redis's, including the 6.x `ziplist` aliases.
//!
//! Owns: the thresholds, their parsing and names. Must never touch the
//! store's data or decide anything but a name.

/// The thresholds, Redis 7.0's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodingLimits {
    /// `hash-max-listpack-entries`.
    pub hash_entries: usize,
    /// `hash-max-listpack-value` (bytes of a field or a value).
    pub hash_value: usize,
    /// `set-max-intset-entries`.
    pub set_intset_entries: usize,
    /// `zset-max-listpack-entries`.
    pub zset_entries: usize,
    /// `zset-max-listpack-value` (bytes of a member).
    pub zset_value: usize,
    /// `list-max-listpack-size` (negative: a size class; reported only).
    pub list_size: i64,
    /// `list-compress-depth` (reported only).
    pub list_compress_depth: u64,
}

impl Default for EncodingLimits {
    fn default() -> Self {
        EncodingLimits {
            hash_entries: 128,
            hash_value: 64,
            set_intset_entries: 512,
            zset_entries: 128,
            zset_value: 64,
            list_size: -2,
            list_compress_depth: 0,
        }
    }
}

/// The canonical setting names, as `CONFIG GET` lists them.
pub const SETTINGS: &[&str] = &[
    "hash-max-listpack-entries",
    "hash-max-listpack-value",
    "set-max-intset-entries",
    "zset-max-listpack-entries",
    "zset-max-listpack-value",
    "list-max-listpack-size",
    "list-compress-depth",
];

/// The Redis 6 names Redis 7 still accepts, and the setting each means.
pub const ALIASES: &[(&str, &str)] = &[
    ("hash-max-ziplist-entries", "hash-max-listpack-entries"),
    ("hash-max-ziplist-value", "hash-max-listpack-value"),
    ("zset-max-ziplist-entries", "zset-max-listpack-entries"),
    ("zset-max-ziplist-value", "zset-max-listpack-value"),
    ("list-max-ziplist-size", "list-max-listpack-size"),
];

/// The canonical name of `name` (lower case) if it is one of these
/// settings or an alias of one.
pub fn canonical(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .copied()
        .find(|s| *s == name)
        .or_else(|| ALIASES.iter().find(|(alias, _)| *alias == name).map(|(_, s)| *s))
}

impl EncodingLimits {
    /// The value of the canonical setting `name`, as `CONFIG GET` shows it.
    pub fn get(&self, name: &str) -> Option<String> {
        Some(match canonical(name)? {
            "hash-max-listpack-entries" => self.hash_entries.to_string(),
            "hash-max-listpack-value" => self.hash_value.to_string(),
            "set-max-intset-entries" => self.set_intset_entries.to_string(),
            "zset-max-listpack-entries" => self.zset_entries.to_string(),
            "zset-max-listpack-value" => self.zset_value.to_string(),
            "list-max-listpack-size" => self.list_size.to_string(),
            "list-compress-depth" => self.list_compress_depth.to_string(),
            _ => return None,
        })
    }

    /// Sets `name` (a setting or alias) to `value`; the error says why
    /// the value is refused. An unknown name is `Ok(false)`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool, String> {
        let Some(name) = canonical(name) else { return Ok(false) };
        let unsigned =
            || value.parse::<usize>().map_err(|_| format!("argument '{value}' must be a non-negative integer"));
        match name {
            "hash-max-listpack-entries" => self.hash_entries = unsigned()?,
            "hash-max-listpack-value" => self.hash_value = unsigned()?,
            "set-max-intset-entries" => self.set_intset_entries = unsigned()?,
            "zset-max-listpack-entries" => self.zset_entries = unsigned()?,
            "zset-max-listpack-value" => self.zset_value = unsigned()?,
            "list-max-listpack-size" => {
                self.list_size = value.parse().map_err(|_| format!("argument '{value}' must be an integer"))?
            }
            "list-compress-depth" => self.list_compress_depth = unsigned()? as u64,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_set_the_listpack_settings() {
        let mut l = EncodingLimits::default();
        assert_eq!(l.set("hash-max-ziplist-value", "10"), Ok(true));
        assert_eq!(l.get("hash-max-listpack-value").as_deref(), Some("10"));
        assert_eq!(l.get("hash-max-ziplist-value").as_deref(), Some("10"));
        assert!(l.set("zset-max-listpack-entries", "-1").is_err());
        assert_eq!(l.set("no-such-setting", "1"), Ok(false));
    }
}
