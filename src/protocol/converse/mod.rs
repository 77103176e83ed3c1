//! Bedrock Converse (`POST /model/{modelId}/converse` and `/converse-stream`) on the broker's
//! one call path: the Converse request becomes an Anthropic Messages body for InvokeModel,
//! and the Anthropic reply and stream events come back as Converse's, named and shaped as
//! botocore's `bedrock-runtime` service model (2023-09-30) has them, so boto3's `converse`
//! and `converse_stream` (and the AWS SDKs) read them unchanged.
//!
//! The module is split by concern, like [`super::anthropic`]:
//! - [`request`]: [`parse_converse_request`], the request body -> [`ConverseRequest`], or a
//!   [`super::FieldError`] naming the field (JSON path in the Converse body);
//! - [`response`]: [`converse_response`], an Anthropic reply -> the Converse response body;
//! - [`stream`]: [`ConverseStream`], Anthropic stream events -> ConverseStream events (event
//!   type and JSON payload), which the route frames with [`super::eventstream::event_frame`];
//! - [`errors`]: [`exception_for`], [`stream_exception`], the exception frame a mid-stream
//!   failure is sent as.
//!
//! On the wire (rest-json) blobs are base64 strings and documents plain JSON.
//!
//! # Request mapping
//!
//! | Converse | Anthropic body | notes |
//! |---|---|---|
//! | `messages[]{role, content[]}` | `messages` | roles `user`/`assistant`; consecutive same-role messages merge into one turn |
//! | `{text}` | `text` block | must not be empty |
//! | `{image{format, source{bytes}}}` | `image`, base64 source, `image/<format>` | png, jpeg, gif, webp; `s3Location` refused (the broker does not read S3) |
//! | `{document{format, name, source, context?, citations?}}` | `document` (`title` = name) | `pdf` bytes -> base64 PDF; `txt`/`md`/`csv`/`html` bytes (UTF-8) and `source.text` -> plain-text source; `source.content[{text}]` -> content source; doc/docx/xls/xlsx and `s3Location` refused |
//! | `{toolUse{toolUseId, name, input}}` | `tool_use{id, name, input}` | `type: server_tool_use` refused |
//! | `{toolResult{toolUseId, content[], status?}}` | `tool_result{tool_use_id, content, is_error}` | content `{text}`, `{json}` (as its JSON text), `{image}`, `{document}`; `status: error` -> `is_error: true` |
//! | `{reasoningContent{reasoningText{text, signature}}}` / `{reasoningContent{redactedContent}}` | `thinking` / `redacted_thinking` (`data` = the decoded bytes) | for multi-turn thinking with tools |
//! | `{cachePoint{type, ttl?}}` (messages, system, tools) | `cache_control{type: ephemeral, ttl?}` on the block or tool before it | a cache point with nothing before it is refused |
//! | `video`, `audio`, `guardContent`, `citationsContent`, `searchResult`, `toolAddition`, `toolRemoval` | | refused, naming the block |
//! | `system[]{text}` | `system` text blocks | |
//! | `inferenceConfig.maxTokens` | `max_tokens` | default 4000 (the seed's); 1..=1,000,000 |
//! | `inferenceConfig.temperature`, `.topP` | `temperature`, `top_p` | 0..=1 |
//! | `inferenceConfig.stopSequences` | `stop_sequences` | non-empty strings |
//! | `toolConfig.tools[].toolSpec{name, description, inputSchema.json}` | `tools[]{name, description, input_schema}` | `strict: true` and `systemTool` refused |
//! | `toolConfig.toolChoice` `{auto}` / `{any}` / `{tool{name}}` | `tool_choice` `auto` / `any` / `{type: tool, name}` | |
//! | `additionalModelRequestFields` | merged into the body | e.g. `top_k`, `thinking`, `anthropic_beta`; a key the request already sets (or `model`, `stream`) is refused |
//! | `requestMetadata`, `performanceConfig`, `serviceTier` | | ignored: served at the standard latency and the default tier |
//! | `guardrailConfig`, `promptVariables`, `additionalModelResponseFieldPaths`, `outputConfig` | | refused: guardrails, prompt resources, response field paths and structured output are not available through this broker |
//! | any other field | | refused, naming it |
//!
//! Always set: `anthropic_version: "bedrock-2023-05-31"` (unless
//! `additionalModelRequestFields` names one).
//!
//! # Reply mapping
//!
//! | Anthropic | Converse |
//! |---|---|
//! | `text` | `{text}` |
//! | `tool_use` | `{toolUse{toolUseId, name, input}}` |
//! | `thinking` / `redacted_thinking` | `{reasoningContent{reasoningText{text, signature}}}` / `{reasoningContent{redactedContent: base64}}` |
//! | other blocks (server tools, ...) | dropped |
//! | `stop_reason` `end_turn`, `tool_use`, `max_tokens`, `stop_sequence`, `model_context_window_exceeded` | the same name |
//! | `stop_reason` `refusal` / anything else | `content_filtered` / `end_turn` |
//! | `usage` | `inputTokens` (uncached input), `outputTokens`, `totalTokens` (input + output + cache read + cache write), `cacheReadInputTokens` and `cacheWriteInputTokens` when the reply reports caching, `cacheDetails[{ttl, inputTokens}]` (1h before 5m) when it breaks writes down |
//! | | `metrics.latencyMs` from the route |
//!
//! # Streaming
//! `messageStart{role}`; per content block: `contentBlockStart{contentBlockIndex,
//! start{toolUse{toolUseId, name}}}` for tool use only (Bedrock sends none for text or
//! reasoning), `contentBlockDelta{contentBlockIndex, delta{text} | {toolUse{input: "<JSON
//! fragment>"}} | {reasoningContent{text} | {signature} | {redactedContent}}}`,
//! `contentBlockStop{contentBlockIndex}`; then `messageStop{stopReason}` and
//! `metadata{usage, metrics{latencyMs}}`. Block indexes count the blocks shown (blocks that are
//! dropped do not leave gaps). A tool call whose input never streamed gets the fragment `{}`
//! so that the assembled input parses. `latencyMs` is Bedrock's `invocationLatency` from
//! `message_stop`, else the time since the [`ConverseStream`] was made. Anthropic `ping`s
//! produce nothing (ConverseStream has no keep-alive event).
//!
//! # Mid-stream errors
//! ConverseStream's exception members are `internalServerException`,
//! `modelStreamErrorException`, `validationException`, `throttlingException` and
//! `serviceUnavailableException`; botocore reads any other name as an error without code or
//! message. Unlike InvokeModelWithResponseStream there is no `modelTimeoutException`, so a
//! passed deadline is sent as `modelStreamErrorException` ("retry your request"); see
//! [`exception_for`]. A stream that broke with one of those five exceptions from Bedrock
//! ends with that same exception ([`stream_exception`]).

pub mod errors;
pub mod request;
pub mod response;
pub mod stream;
#[cfg(test)]
mod test_support;

pub use errors::{exception_for, stream_exception};
pub use request::{parse_converse_request, ConverseRequest, IGNORED_FIELDS};
pub use response::converse_response;
pub use stream::ConverseStream;
