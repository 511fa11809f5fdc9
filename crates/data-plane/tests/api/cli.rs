//! The data plane's `--help`: only its own settings, each flag named after its variable.

#[test]
fn the_data_plane_shows_only_its_own_settings() {
    let flags = domain::testing::help_flags(env!("CARGO_BIN_EXE_data-plane"));
    for own in [
        "database-url",
        "redis-url",
        "data-plane-addr",
        "upstream-allow",
        "redis-timeout-ms",
        "engine",
        // Tokens: their issuer, and what opens the tenants' signing keys.
        "public-url",
        "token-key",
        "secret-key",
    ] {
        assert!(flags.iter().any(|f| f == own), "--{own} missing: {flags:?}");
    }
    for foreign in ["control-plane-addr", "cookie-secure", "signup-enabled"] {
        assert!(
            !flags.iter().any(|f| f == foreign),
            "--{foreign} is the control plane's: {flags:?}"
        );
    }
}
