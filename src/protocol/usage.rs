//! Token counts as Anthropic reports them, gathered from a reply's `usage` or along a stream
//! (`message_start`, then `message_delta`, whose counts are cumulative: the last one wins),
//! with Bedrock's `amazon-bedrock-invocationMetrics` (on `message_stop`) as the fallback
//! when a stream carried no usage at all. Each protocol reports them in its own shape.

use serde_json::{json, Value};

/// One reply's token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TokenCounts {
    /// Input tokens neither read from nor written to the prompt cache.
    pub(crate) input: u64,
    /// Input tokens read from the prompt cache.
    pub(crate) cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub(crate) cache_creation: u64,
    /// Of `cache_creation`, those cached for one hour (the rest for five minutes), when the
    /// reply broke them down (`usage.cache_creation.ephemeral_1h_input_tokens`).
    pub(crate) cache_creation_1h: Option<u64>,
    /// Whether the reply reported cache counts at all (models without caching do not).
    pub(crate) cache_reported: bool,
    /// Generated tokens.
    pub(crate) output: u64,
    /// Whether any counts arrived.
    pub(crate) seen: bool,
}

impl TokenCounts {
    /// The counts of a reply's `usage` object.
    pub(crate) fn from_usage(usage: &Value) -> TokenCounts {
        let mut counts = TokenCounts::default();
        counts.update(usage);
        counts
    }

    /// Takes the counts a `usage` object carries, keeping the others.
    pub(crate) fn update(&mut self, usage: &Value) {
        if !usage.is_object() {
            return;
        }
        self.seen = true;
        let get = |key: &str| usage.get(key).and_then(Value::as_u64);
        if let Some(n) = get("input_tokens") {
            self.input = n;
        }
        if let Some(n) = get("output_tokens") {
            self.output = n;
        }
        if let Some(n) = get("cache_read_input_tokens") {
            self.cache_read = n;
            self.cache_reported = true;
        }
        if let Some(n) = get("cache_creation_input_tokens") {
            self.cache_creation = n;
            self.cache_reported = true;
        }
        if let Some(n) = usage
            .pointer("/cache_creation/ephemeral_1h_input_tokens")
            .and_then(Value::as_u64)
        {
            self.cache_creation_1h = Some(n);
        }
    }

    /// At `message_stop`: Bedrock's invocation metrics stand in for a stream that carried no
    /// usage.
    pub(crate) fn fallback_to_metrics(&mut self, message_stop: &Value) {
        let metrics = &message_stop["amazon-bedrock-invocationMetrics"];
        if self.seen || !metrics.is_object() {
            return;
        }
        self.update(&json!({
            "input_tokens": metrics["inputTokenCount"],
            "output_tokens": metrics["outputTokenCount"],
            "cache_read_input_tokens": metrics["cacheReadInputTokenCount"],
            "cache_creation_input_tokens": metrics["cacheWriteInputTokenCount"],
        }));
    }

    /// All input tokens, cached or not.
    pub(crate) fn all_input(&self) -> u64 {
        self.input + self.cache_read + self.cache_creation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_counts_are_cumulative_and_metrics_only_fill_a_silent_stream() {
        let mut counts = TokenCounts::default();
        counts
            .update(&json!({"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 1}));
        counts.update(&json!({"output_tokens": 30}));
        counts.fallback_to_metrics(&json!({"amazon-bedrock-invocationMetrics": {"inputTokenCount": 99, "outputTokenCount": 99}}));
        assert_eq!(
            (counts.input, counts.cache_read, counts.output),
            (10, 4, 30)
        );
        assert_eq!(counts.all_input(), 14);
        assert!(counts.cache_reported);

        let mut silent = TokenCounts::default();
        silent.fallback_to_metrics(&json!({"amazon-bedrock-invocationMetrics": {"inputTokenCount": 7, "outputTokenCount": 2}}));
        assert_eq!(
            (silent.input, silent.output, silent.cache_reported),
            (7, 2, false)
        );
    }

    #[test]
    fn the_one_hour_cache_breakdown_is_kept() {
        let counts = TokenCounts::from_usage(&json!({
            "input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 50,
            "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30}}));
        assert_eq!(counts.cache_creation_1h, Some(30));
    }
}
