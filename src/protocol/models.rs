//! The `GET /v1/models` body: one list both OpenAI and Anthropic clients read.
//!
//! - OpenAI (`client.models.list()` in openai-python): `{"object": "list", "data": [{"id",
//!   "object": "model", "created" (Unix seconds), "owned_by"}]}`.
//! - Anthropic (`client.models.list()` in anthropic-sdk-python; Claude Code's gateway model
//!   discovery, which keeps the ids containing "claude" or "anthropic" and shows
//!   `display_name`): `{"data": [{"type": "model", "id", "display_name", "created_at"
//!   (RFC 3339)}], "has_more", "first_id", "last_id"}`.
//!
//! The two sets of names do not collide, so each entry and the envelope carry both. Both
//! SDKs build their models leniently and keep unknown fields (their `BaseModel` is
//! `extra="allow"`), so each reads its own fields and ignores the other's. Each entry also
//! says `lifecycle: "active"`, which newer Anthropic SDKs declare on a model. The whole list
//! is one page: `has_more` is false (the Anthropic SDK then asks for no next page; the
//! OpenAI SDK never pages this list).

use serde_json::{json, Value};

/// Who the models belong to, as OpenAI's `owned_by` says it: the broker serves Claude.
pub const OWNED_BY: &str = "anthropic";

/// One model the broker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The name clients send as `model` (a configured alias or a Bedrock model id).
    pub id: String,
    /// A human-readable name (Anthropic's `display_name`, shown by Claude Code).
    pub display_name: String,
    /// When the model was released, in Unix seconds (OpenAI's `created`, Anthropic's
    /// `created_at`); 0 when unknown, as Anthropic's API allows.
    pub created: u64,
}

/// What the broker knows of a model from its id alone: a display name and its release date.
/// `us.anthropic.claude-sonnet-4-20250514-v1:0` is "Claude Sonnet 4" of 2025-05-14: the
/// region prefix, `anthropic.` and the version suffix are dropped, the words capitalised and
/// the 8-digit date read as the release day, and a version in parts (`4-5`) written `4.5`. Ids of another shape (ARNs, aliases) keep the id
/// as their name and 0 as their date.
pub fn model_info(id: &str) -> ModelInfo {
    // 1. The name part: after the last `/` of an ARN, after `anthropic.`, before `-v1:0`.
    let name = id.rsplit('/').next().unwrap_or(id);
    let name = name.split_once("anthropic.").map_or(name, |(_, rest)| rest);
    let name = match name.rsplit_once("-v") {
        Some((base, version)) if version.starts_with(|c: char| c.is_ascii_digit()) => base,
        _ => name,
    };
    if !name.starts_with("claude") {
        return ModelInfo {
            id: id.to_string(),
            display_name: id.to_string(),
            created: 0,
        };
    }
    // 2. Its words, and the release date among them.
    let mut words = Vec::new();
    let mut created = 0;
    for word in name.split('-').filter(|w| !w.is_empty()) {
        match release_day(word) {
            Some(day) => created = day,
            // A version number in parts (`4-5`) reads `4.5`.
            None if is_version_part(word)
                && words
                    .last()
                    .is_some_and(|w: &String| w.split('.').all(is_version_part)) =>
            {
                let last = words.last_mut().expect("checked above");
                last.push('.');
                last.push_str(word);
            }
            None => {
                let mut chars = word.chars();
                let first = chars.next().map(|c| c.to_ascii_uppercase());
                words.push(first.into_iter().chain(chars).collect::<String>());
            }
        }
    }
    ModelInfo {
        id: id.to_string(),
        display_name: words.join(" "),
        created,
    }
}

/// One or two digits: a part of a model's version number.
fn is_version_part(word: &str) -> bool {
    (1..=2).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYYMMDD` as Unix seconds at midnight UTC, if it is a plausible date.
fn release_day(word: &str) -> Option<u64> {
    if word.len() != 8 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, month, day): (u64, u64, u64) = (
        word[..4].parse().ok()?,
        word[4..6].parse().ok()?,
        word[6..].parse().ok()?,
    );
    if !(2000..=2999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400)
}

/// Days from 1970-01-01 to the proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, for dates on or after the epoch).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The `GET /v1/models` body for `models`, in their order.
pub fn models_list(models: &[ModelInfo]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|model| {
            json!({
                "id": model.id,
                "object": "model",
                "type": "model",
                "created": model.created,
                "created_at": rfc3339(model.created),
                "display_name": model.display_name,
                "owned_by": OWNED_BY,
                "lifecycle": "active",
            })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": models.first().map(|m| m.id.as_str()),
        "last_id": models.last().map(|m| m.id.as_str()),
    })
}

/// `unix_secs` as an RFC 3339 UTC timestamp (`2025-05-14T00:00:00Z`).
pub fn rfc3339(unix_secs: u64) -> String {
    let (days, secs_of_day) = (unix_secs / 86_400, unix_secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so a leap day ends each 400-year era's year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sonnet() -> ModelInfo {
        ModelInfo {
            id: "us.anthropic.claude-sonnet-4-20250514-v1:0".into(),
            display_name: "Claude Sonnet 4".into(),
            created: 1_747_180_800,
        }
    }

    fn haiku() -> ModelInfo {
        ModelInfo {
            id: "anthropic.claude-3-haiku-20240307-v1:0".into(),
            display_name: "Claude Haiku 3".into(),
            created: 0,
        }
    }

    #[test]
    fn one_list_carries_openais_and_anthropics_fields() {
        let list = models_list(&[sonnet(), haiku()]);
        // OpenAI's page and model.
        assert_eq!(list["object"], "list");
        let first = &list["data"][0];
        assert_eq!(first["id"], sonnet().id);
        assert_eq!(first["object"], "model");
        assert_eq!(first["created"], 1_747_180_800u64);
        assert_eq!(first["owned_by"], "anthropic");
        // Anthropic's page and model.
        assert_eq!(list["has_more"], false);
        assert_eq!(list["first_id"], sonnet().id);
        assert_eq!(list["last_id"], haiku().id);
        assert_eq!(first["type"], "model");
        assert_eq!(first["display_name"], "Claude Sonnet 4");
        assert_eq!(first["created_at"], "2025-05-14T00:00:00Z");
        assert_eq!(list["data"][1]["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(list["data"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn an_empty_list_has_no_first_or_last_id() {
        let list = models_list(&[]);
        assert_eq!(list["data"], json!([]));
        assert_eq!(list["first_id"], Value::Null);
        assert_eq!(list["last_id"], Value::Null);
        assert_eq!(list["has_more"], false);
    }

    #[test]
    fn names_and_dates_come_from_bedrock_model_ids() {
        let cases = [
            (
                "us.anthropic.claude-sonnet-4-20250514-v1:0",
                "Claude Sonnet 4",
                "2025-05-14T00:00:00Z",
            ),
            (
                "anthropic.claude-3-haiku-20240307-v1:0",
                "Claude 3 Haiku",
                "2024-03-07T00:00:00Z",
            ),
            (
                "global.anthropic.claude-opus-4-5-20251101-v1:0",
                "Claude Opus 4.5",
                "2025-11-01T00:00:00Z",
            ),
            ("anthropic.claude-sonnet-5", "Claude Sonnet 5", "1970-01-01T00:00:00Z"),
            (
                "arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
                "Claude 3.5 Haiku",
                "2024-10-22T00:00:00Z",
            ),
            ("sonnet", "sonnet", "1970-01-01T00:00:00Z"),
            ("meta.llama3-70b", "meta.llama3-70b", "1970-01-01T00:00:00Z"),
        ];
        for (id, name, date) in cases {
            let info = model_info(id);
            assert_eq!(info.id, id);
            assert_eq!(info.display_name, name, "{id}");
            assert_eq!(rfc3339(info.created), date, "{id}");
        }
        // Not a date: kept as a word.
        assert_eq!(
            model_info("anthropic.claude-x-20251399").display_name,
            "Claude X 20251399"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (1_735_689_600, "2025-01-01T00:00:00Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ];
        for (secs, expected) in cases {
            assert_eq!(rfc3339(secs), expected, "{secs}");
        }
    }
}
