//! The admit phase's reading of a request target: `/{tenant}/{api}{rest}?{query}`, with the path
//! checks that keep a request inside its API's upstream prefix.

use http::Uri;

use crate::errors::GatewayError;

/// `/{tenant}/{api}{rest}?{query}` split out of a request URI.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub tenant: &'a str,
    pub api: &'a str,
    /// Empty, or starting with `/`.
    pub rest: &'a str,
    pub query: Option<&'a str>,
    /// `rest` holds a percent-encoded slash (refused unless the API passes them).
    pub encoded_slash: bool,
}

/// The parse phase: which tenant and API a request is for, and the rest of its path.
pub fn parse_target(uri: &Uri) -> Result<Target<'_>, GatewayError> {
    parse_target_parts(uri.path(), uri.query())
}

/// [`parse_target`] of a path and query already split apart.
pub fn parse_target_parts<'a>(
    path: &'a str,
    query: Option<&'a str>,
) -> Result<Target<'a>, GatewayError> {
    let path = path.strip_prefix('/').ok_or(GatewayError::NoRoute)?;
    let (tenant, after) = split_at_byte(path, b'/').ok_or(GatewayError::NoRoute)?;
    let (api, rest) = byte_at(after, b'/').map_or((after, ""), |i| after.split_at(i));
    if tenant.is_empty() || api.is_empty() {
        return Err(GatewayError::NoRoute);
    }
    let encoded_slash = check_path(rest)?;
    Ok(Target {
        tenant,
        api,
        rest,
        query,
        encoded_slash,
    })
}

/// Refuses what an upstream could read as a way out of the API's path prefix once it decodes or
/// normalises the path: dot segments (`..`, `%2e%2e`, `..;x` as Tomcat reads it), backslashes,
/// NUL, and double-encoded dots, slashes, backslashes and NULs (`%252e`). Says whether the path
/// holds an encoded slash, which only an API that passes them accepts.
fn check_path(rest: &str) -> Result<bool, GatewayError> {
    // One pass: segments end at `/` and, as an upstream that decodes `%2F` would see them, at
    // `%2F` too.
    let b = rest.as_bytes();
    let hex = |at: usize| {
        b.get(at..at + 2)
            .map(|h| [h[0].to_ascii_lowercase(), h[1].to_ascii_lowercase()])
    };
    let mut encoded_slash = false;
    let (mut seg, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'/' => {
                refuse_dot_segment(&b[seg..i])?;
                i += 1;
                seg = i;
            }
            b'\\' => {
                return Err(GatewayError::BadRequest(
                    "The path must not contain backslashes.",
                ));
            }
            b'%' => match hex(i + 1).as_ref() {
                Some(b"2f") => {
                    encoded_slash = true;
                    refuse_dot_segment(&b[seg..i])?;
                    i += 3;
                    seg = i;
                }
                Some(b"5c") => {
                    return Err(GatewayError::BadRequest(
                        "The path must not contain backslashes, encoded or not.",
                    ));
                }
                Some(b"00") => {
                    return Err(GatewayError::BadRequest(
                        "The path must not contain an encoded NUL (%00).",
                    ));
                }
                Some(b"25")
                    if matches!(hex(i + 3).as_ref(), Some(b"2e" | b"2f" | b"5c" | b"00")) =>
                {
                    return Err(GatewayError::BadRequest(
                        "The path must not contain double-encoded dots, slashes or NULs.",
                    ));
                }
                _ => i += 1,
            },
            _ => i += 1,
        }
    }
    refuse_dot_segment(&b[seg..])?;
    Ok(encoded_slash)
}

fn refuse_dot_segment(seg: &[u8]) -> Result<(), GatewayError> {
    // Only a segment starting with '.' or '%' can be one (the common case costs a byte test).
    if matches!(seg.first(), Some(b'.' | b'%')) && is_dot_segment(seg) {
        return Err(GatewayError::BadRequest(
            "The path must not contain '.' or '..' segments.",
        ));
    }
    Ok(())
}

/// Where the ASCII byte `b` first occurs in `s` (a byte search: `str::find` with a `char` pattern
/// costs several times more on paths this short).
pub(crate) fn byte_at(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|c| c == b)
}

/// `s` split around the first ASCII byte `b`, as `str::split_once` with a `char` would.
#[inline]
pub(crate) fn split_at_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    // An ASCII byte is always a whole character, so both sides stay valid UTF-8.
    byte_at(s, b).map(|i| (&s[..i], &s[i + 1..]))
}

fn is_dot_segment(b: &[u8]) -> bool {
    // ".", "..", and their percent-encoded spellings (%2e, any case), without allocating; what
    // follows a `;` (or `%3b`) is a path parameter some servers strip before they normalise.
    let end = b
        .iter()
        .enumerate()
        .position(|(i, c)| {
            *c == b';'
                || (*c == b'%'
                    && b.get(i + 1..i + 3)
                        .is_some_and(|h| h.eq_ignore_ascii_case(b"3b")))
        })
        .unwrap_or(b.len());
    let b = &b[..end];
    let (mut dots, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
        } else if b.len() - i >= 3 && b[i] == b'%' && b[i + 1] == b'2' && (b[i + 2] | 0x20) == b'e'
        {
            i += 3;
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(uri: &str) -> Result<Target<'_>, GatewayError> {
        // Leak-free: the Uri lives in a Box the test keeps.
        let uri: &'static Uri = Box::leak(Box::new(uri.parse::<Uri>().unwrap()));
        parse_target(uri)
    }

    #[test]
    fn targets_are_split() {
        assert_eq!(
            t("/acme/weather/v1/today?city=a&city=b").unwrap(),
            Target {
                tenant: "acme",
                api: "weather",
                rest: "/v1/today",
                query: Some("city=a&city=b"),
                encoded_slash: false,
            }
        );
        assert_eq!(t("/acme/weather").unwrap().rest, "");
        assert_eq!(t("/acme/weather/").unwrap().rest, "/");
        assert_eq!(t("/acme"), Err(GatewayError::NoRoute));
        assert_eq!(t("/acme/"), Err(GatewayError::NoRoute));
        assert_eq!(t("/"), Err(GatewayError::NoRoute));
        assert!(matches!(
            t("/acme/weather/../admin"),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(matches!(
            t("/acme/weather/%2E%2e/admin"),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(t("/acme/weather/a..b").is_ok());
        for bad in [
            "/acme/weather/..%2f..%2fadmin",
            "/acme/weather/%2e%2e%2fadmin",
            "/acme/weather/..%5cadmin",
            "/acme/weather/..\\admin",
            "/acme/weather/..;/admin",
            "/acme/weather/.;x/admin",
            "/acme/weather/%2e%2E%3bjsessionid=1/admin",
            "/acme/weather/a%00.json",
            "/acme/weather/%252e%252e/admin",
            "/acme/weather/a%252fb",
        ] {
            let r = t(bad);
            let encoded_slash_only = r.as_ref().is_ok_and(|t| t.encoded_slash);
            assert!(
                matches!(r, Err(GatewayError::BadRequest(_))) || encoded_slash_only,
                "{bad}"
            );
        }
        assert!(t("/acme/weather/a%2fb").unwrap().encoded_slash);
        assert!(matches!(
            t("/acme/weather/..%2f..%2fadmin"),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(!t("/acme/weather/a;b=c/%41%20").unwrap().encoded_slash);
    }
}
