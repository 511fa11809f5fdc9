//! Slugs name tenants and APIs in gateway URLs: `/{tenant_slug}/{api_slug}/...`.

use std::fmt;

/// Longest slug accepted.
pub const MAX_SLUG_LEN: usize = 50;

/// Words that would collide with the gateway's own paths.
pub const RESERVED_SLUGS: &[&str] = &["health", "metrics", "api", "admin", "static", "_gateway"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_SLUG_LEN} characters")]
    TooLong,
    #[error("may only contain lowercase letters a-z, digits and '-'")]
    InvalidCharacter,
    #[error("must start and end with a letter or digit")]
    EdgeHyphen,
    #[error("'{0}' is reserved by the gateway")]
    Reserved(String),
}

/// A lowercase `[a-z0-9-]` name of 1 to 50 characters, not starting or ending with `-`,
/// and not one of [`RESERVED_SLUGS`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

impl Slug {
    pub fn parse(input: &str) -> Result<Self, SlugError> {
        if input.is_empty() {
            return Err(SlugError::Empty);
        }
        if input.len() > MAX_SLUG_LEN {
            return Err(SlugError::TooLong);
        }
        if RESERVED_SLUGS.contains(&input) {
            return Err(SlugError::Reserved(input.to_owned()));
        }
        if !input
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(SlugError::InvalidCharacter);
        }
        if input.starts_with('-') || input.ends_with('-') {
            return Err(SlugError::EdgeHyphen);
        }
        Ok(Self(input.to_owned()))
    }

    /// Suggests a slug from a display name ("Acme Corp." -> "acme-corp"). The suggestion may still
    /// be refused by [`Slug::parse`] (empty, reserved), so the result goes through it.
    pub fn derive_from(name: &str) -> Result<Self, SlugError> {
        let mut out = String::with_capacity(name.len());
        for ch in name.chars().flat_map(char::to_lowercase) {
            if ch.is_ascii_alphanumeric() {
                out.push(ch);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
            if out.len() >= MAX_SLUG_LEN {
                break;
            }
        }
        let trimmed = out.trim_matches('-');
        Self::parse(trimmed)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reserved_words_are_refused() {
        for word in RESERVED_SLUGS {
            assert_eq!(
                Slug::parse(word),
                Err(SlugError::Reserved((*word).to_owned()))
            );
        }
    }

    #[test]
    fn examples() {
        assert!(Slug::parse("acme").is_ok());
        assert!(Slug::parse("a").is_ok());
        assert!(Slug::parse("weather-api-2").is_ok());
        assert_eq!(Slug::parse(""), Err(SlugError::Empty));
        assert_eq!(Slug::parse("Acme"), Err(SlugError::InvalidCharacter));
        assert_eq!(Slug::parse("ac me"), Err(SlugError::InvalidCharacter));
        assert_eq!(Slug::parse("acme/x"), Err(SlugError::InvalidCharacter));
        assert_eq!(Slug::parse("-acme"), Err(SlugError::EdgeHyphen));
        assert_eq!(Slug::parse(&"a".repeat(51)), Err(SlugError::TooLong));
        assert!(Slug::parse(&"a".repeat(50)).is_ok());
    }

    #[test]
    fn derives_from_display_names() {
        assert_eq!(
            Slug::derive_from("Acme Corp.").map(Slug::into_inner),
            Ok("acme-corp".into())
        );
        assert_eq!(
            Slug::derive_from("  Hello,  World! ").map(Slug::into_inner),
            Ok("hello-world".into())
        );
        assert_eq!(
            Slug::derive_from("Ünïcode Ltd").map(Slug::into_inner),
            Ok("n-code-ltd".into())
        );
        assert_eq!(Slug::derive_from("!!!"), Err(SlugError::Empty));
        assert!(matches!(
            Slug::derive_from("Admin"),
            Err(SlugError::Reserved(_))
        ));
        assert_eq!(
            Slug::derive_from(&"x".repeat(200)).map(|s| s.as_str().len()),
            Ok(50)
        );
    }

    proptest! {
        #[test]
        fn valid_shapes_parse_and_round_trip(s in "[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?") {
            prop_assume!(!RESERVED_SLUGS.contains(&s.as_str()));
            let slug = Slug::parse(&s).unwrap();
            prop_assert_eq!(slug.as_str(), s.as_str());
        }

        #[test]
        fn any_char_outside_the_alphabet_is_refused(
            head in "[a-z0-9]{0,20}",
            bad in "[^a-z0-9-]",
            tail in "[a-z0-9]{0,20}",
        ) {
            let input = format!("{head}{bad}{tail}");
            prop_assert!(Slug::parse(&input).is_err());
        }

        #[test]
        fn too_long_is_refused(s in "[a-z0-9]{51,80}") {
            prop_assert_eq!(Slug::parse(&s), Err(SlugError::TooLong));
        }

        #[test]
        fn whatever_parses_obeys_the_rules(s in "\\PC{0,60}") {
            if let Ok(slug) = Slug::parse(&s) {
                let v = slug.as_str();
                prop_assert!(!v.is_empty() && v.len() <= MAX_SLUG_LEN);
                prop_assert!(v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert!(!RESERVED_SLUGS.contains(&v));
            }
        }

        #[test]
        fn derived_slugs_always_parse(name in "\\PC{0,120}") {
            if let Ok(slug) = Slug::derive_from(&name) {
                prop_assert_eq!(Slug::parse(slug.as_str()), Ok(slug.clone()));
            }
        }
    }
}
