//! Passwords: argon2id hashes, a strength policy, and verification that costs the same whether or
//! not the user exists.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// OWASP's first argon2id configuration: 19 MiB of memory, 2 iterations, 1 lane.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_ITERATIONS: u32 = 2;
pub const ARGON2_LANES: u32 = 1;

pub const MIN_PASSWORD_LEN: usize = 10;
/// The least zxcvbn strength accepted: "very unguessable", 10^10 guesses or more (a season, a
/// year and `!!` is about 10^8).
pub const MIN_PASSWORD_SCORE: zxcvbn::Score = zxcvbn::Score::Four;
pub const MAX_PASSWORD_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("could not hash the password: {0}")]
    Hash(String),
}

fn hasher() -> Argon2<'static> {
    let params =
        Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// A hash of a password nobody knows, verified against when the user does not exist so that the
/// answer takes as long as for a real user.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password("dummy password that matches no account")
            .unwrap_or_else(|_| String::from("$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$invalid"))
    })
}

/// Verifies `password` against `stored` (the user's hash), or against a dummy hash when there is
/// no such user, so that both cases cost one argon2 verification. False for the unknown user.
pub fn verify_password(stored: Option<&str>, password: &str) -> bool {
    let (hash, known) = match stored {
        Some(h) => (h, true),
        None => (dummy_hash(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = hasher()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && known
}

/// Forces the dummy hash to be computed now (at start-up) rather than on the first failed login.
pub fn warm_up() {
    let _ = dummy_hash();
}

/// Fragments that make a password guessable whatever surrounds them.
const COMMON_PASSWORDS: &[&str] = &[
    "password", "123456", "qwerty", "letmein", "welcome", "iloveyou", "admin", "monkey", "dragon",
    "abc123", "111111", "sunshine", "princess", "football", "baseball",
];

/// Why a new password is refused, in words for the person choosing it; `None` when it is fine.
pub fn weakness(password: &str, username: &str) -> Option<String> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Some(format!(
            "Password must be at least {MIN_PASSWORD_LEN} characters long."
        ));
    }
    if len > MAX_PASSWORD_LEN {
        return Some(format!(
            "Password must be at most {MAX_PASSWORD_LEN} characters long."
        ));
    }
    let lower = password.to_lowercase();
    if !username.is_empty() && lower.contains(&username.to_lowercase()) {
        return Some("Password must not contain the username.".into());
    }
    let distinct = {
        let mut chars: Vec<char> = lower.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        chars.len()
    };
    if distinct < 5 {
        return Some("Password is too repetitive; use at least 5 different characters.".into());
    }
    if COMMON_PASSWORDS.iter().any(|c| lower.contains(c)) {
        return Some("Password is too common; avoid words like 'password' or '123456'.".into());
    }
    // What a cracker would try early: dictionary words with the usual substitutions, dates,
    // keyboard walks, a season and a year with '!' after. Fewer than 10^10 guesses is refused.
    let estimate = zxcvbn::zxcvbn(password, &[username]);
    if estimate.score() < MIN_PASSWORD_SCORE {
        let mut why = String::from("Password is too easy to guess");
        if let Some(f) = estimate.feedback() {
            if let Some(w) = f.warning() {
                why.push_str(": ");
                why.push_str(&w.to_string());
            }
            why.push('.');
            for s in f.suggestions() {
                why.push(' ');
                why.push_str(&s.to_string());
            }
        } else {
            why.push('.');
        }
        if !why.ends_with('.') {
            why.push('.');
        }
        why.push_str(" A few unrelated words make a strong one.");
        return Some(why);
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn right_password_verifies_and_wrong_one_does_not() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password(Some(&hash), "correct horse battery"));
        assert!(!verify_password(Some(&hash), "correct horse battery!"));
        assert!(!verify_password(Some(&hash), ""));
        assert!(!verify_password(
            Some("not a hash"),
            "correct horse battery"
        ));
    }

    #[test]
    fn the_same_password_gets_different_salts() {
        assert_ne!(
            hash_password("same password 1").unwrap(),
            hash_password("same password 1").unwrap()
        );
    }

    #[test]
    fn unknown_user_never_verifies() {
        assert!(!verify_password(
            None,
            "dummy password that matches no account"
        ));
        assert!(!verify_password(None, "anything"));
    }

    /// The median time of a verification against `stored` and without a user, the two taken in
    /// turn (so a neighbour's burst of load falls on both alike).
    fn median_costs(stored: &str) -> (Duration, Duration) {
        let time = |s: Option<&str>| {
            let start = Instant::now();
            let _ = verify_password(s, "a wrong password");
            start.elapsed()
        };
        let (mut known, mut unknown): (Vec<Duration>, Vec<Duration>) =
            (0..9).map(|_| (time(Some(stored)), time(None))).unzip();
        known.sort();
        unknown.sort();
        (known[known.len() / 2], unknown[unknown.len() / 2])
    }

    #[test]
    fn unknown_user_costs_about_what_a_known_user_costs() {
        warm_up();
        let hash = hash_password("the real password").unwrap();
        let (known, unknown) = median_costs(&hash);
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        // Both are one argon2id verification with the same parameters; a missing-user shortcut
        // would be thousands of times cheaper (a ratio under 0.001). The band is wide because CI
        // runs this beside other tests on two cores: it once read 0.48.
        assert!(
            (0.1..10.0).contains(&ratio),
            "unknown {unknown:?} vs known {known:?}"
        );
    }

    #[test]
    fn weak_passwords_are_explained() {
        assert!(weakness("short", "bob").unwrap().contains("at least"));
        assert!(
            weakness("bobbobbob-rocks", "bob")
                .unwrap()
                .contains("username")
        );
        assert!(
            weakness("aaaaaaaaaaaa", "x")
                .unwrap()
                .contains("repetitive")
        );
        assert!(weakness("mypassword99", "x").unwrap().contains("common"));
        assert_eq!(weakness("tangerine-orbit-42", "bob"), None);
        // Long enough and varied, and still what a cracker tries early.
        for guessable in [
            "Summer2024!!",
            "Winter2025!!",
            "P@ssw0rd2024",
            "qwertyuiop123",
            "Jennifer1990!",
        ] {
            let why = weakness(guessable, "x").unwrap_or_else(|| panic!("{guessable} accepted"));
            assert!(
                why.contains("too easy to guess") || why.contains("common"),
                "{guessable}: {why}"
            );
        }
        assert_eq!(weakness("granite-lantern-sparrow-81", "alice"), None);
        assert_eq!(weakness("correct-horse-42", "alice"), None);
        assert_eq!(weakness("sup3r-secret-99", "root"), None);
    }
}
