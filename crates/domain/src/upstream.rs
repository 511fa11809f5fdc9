//! The upstream URL an API forwards to.

use std::fmt;

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamUrlError {
    #[error("is not a valid URL: {0}")]
    Invalid(String),
    #[error("must start with http:// or https://")]
    Scheme,
    #[error("must name a host")]
    NoHost,
    #[error("must not contain a user name or password; send credentials as headers instead")]
    Credentials,
    #[error("must not contain a '#fragment'")]
    Fragment,
}

/// An absolute `http`/`https` URL with a host, no credentials and no fragment. Stored without a
/// trailing slash on the path, so `{upstream}/{rest}` joins cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl(Url);

impl UpstreamUrl {
    pub fn parse(input: &str) -> Result<Self, UpstreamUrlError> {
        let url = Url::parse(input.trim()).map_err(|e| UpstreamUrlError::Invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UpstreamUrlError::Scheme);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UpstreamUrlError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UpstreamUrlError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(UpstreamUrlError::Fragment);
        }
        Ok(Self(url))
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    /// Scheme, authority and path, without a trailing `/` (`http://up:8080/v1`).
    pub fn base(&self) -> String {
        let mut s = format!("{}://{}", self.0.scheme(), self.authority());
        s.push_str(self.0.path().trim_end_matches('/'));
        s
    }

    /// `host[:port]`, the value of the `Host` header sent upstream.
    pub fn authority(&self) -> String {
        let host = self.0.host_str().unwrap_or_default();
        match self.0.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// `host:port` to connect to, with the scheme's port when the URL names none.
    pub fn connect_addr(&self) -> String {
        let host = self.0.host_str().unwrap_or_default();
        format!("{host}:{}", self.port())
    }

    /// The port connected to: the URL's own, else its scheme's.
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(80)
    }

    /// The upstream URL's own query string, if it has one (prepended to the caller's).
    pub fn query(&self) -> Option<&str> {
        self.0.query()
    }
}

impl fmt::Display for UpstreamUrl {
    /// The canonical stored form: the base plus the upstream's own query, if any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base())?;
        if let Some(q) = self.query() {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_and_normalises() {
        let u = UpstreamUrl::parse("https://api.example.com/v1/").unwrap();
        assert_eq!(u.to_string(), "https://api.example.com/v1");
        assert_eq!(u.authority(), "api.example.com");
        let u = UpstreamUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:8080");
        assert_eq!(u.authority(), "127.0.0.1:8080");
        let u = UpstreamUrl::parse("http://[::1]:9000/a?v=2").unwrap();
        assert_eq!(u.to_string(), "http://[::1]:9000/a?v=2");
    }

    #[test]
    fn refuses_what_it_must() {
        assert_eq!(
            UpstreamUrl::parse("ftp://x.org"),
            Err(UpstreamUrlError::Scheme)
        );
        assert_eq!(
            UpstreamUrl::parse("http://u:p@x.org"),
            Err(UpstreamUrlError::Credentials)
        );
        assert_eq!(
            UpstreamUrl::parse("http://u@x.org"),
            Err(UpstreamUrlError::Credentials)
        );
        assert_eq!(
            UpstreamUrl::parse("http://x.org/#top"),
            Err(UpstreamUrlError::Fragment)
        );
        assert!(matches!(
            UpstreamUrl::parse("not a url"),
            Err(UpstreamUrlError::Invalid(_))
        ));
        assert!(matches!(
            UpstreamUrl::parse("file:///etc/passwd"),
            Err(UpstreamUrlError::Scheme)
        ));
    }
}
