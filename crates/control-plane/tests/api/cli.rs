//! The control plane's `--help`: only its own settings, each flag named after its variable.

#[test]
fn the_control_plane_shows_only_its_own_settings() {
    let flags = domain::testing::help_flags(env!("CARGO_BIN_EXE_control-plane"));
    for own in [
        "database-url",
        "control-plane-addr",
        "secret-key",
        "public-url",
        "upstream-allow",
    ] {
        assert!(flags.iter().any(|f| f == own), "--{own} missing: {flags:?}");
    }
    for foreign in ["data-plane-addr", "max-body-bytes", "engine", "workers"] {
        assert!(
            !flags.iter().any(|f| f == foreign),
            "--{foreign} is the data plane's: {flags:?}"
        );
    }
}
