//! Configuration: layers, validation, and errors that name the key to fix.

use crate::support::test_env;
use flashsale::config::{Config, FlagOverrides};

fn load(env: &[(&str, &str)], flags: FlagOverrides) -> Result<Config, String> {
    Config::load(None, test_env(env), &flags).map_err(|e| e.to_string())
}

#[test]
fn defaults_environment_and_flags_layer_in_order() {
    let config = load(&[], FlagOverrides::default()).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.http.body_bytes_max, 4096);
    let config = load(
        &[
            ("FLASHSALE_HTTP__BODY_BYTES_MAX", "8192"),
            ("FLASHSALE_LISTEN", "127.0.0.1:9000"),
        ],
        FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(config.http.body_bytes_max, 8192);
    assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
    let flags = FlagOverrides {
        listen: Some("127.0.0.1:9100".into()),
        ..Default::default()
    };
    let config = load(&[("FLASHSALE_LISTEN", "127.0.0.1:9000")], flags).unwrap();
    assert_eq!(
        config.listen.to_string(),
        "127.0.0.1:9100",
        "flags win over the environment"
    );
}

#[test]
fn a_config_file_sits_between_defaults_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flashsale.toml");
    std::fs::write(
        &file,
        "[writers]\ncount = 7\n[http]\nbody_bytes_max = 1000\n",
    )
    .unwrap();
    let config = Config::load(
        Some(&file),
        test_env(&[("FLASHSALE_HTTP__BODY_BYTES_MAX", "2000")]),
        &FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(config.writers.count, 7);
    assert_eq!(config.http.body_bytes_max, 2000);
    let missing = Config::load(
        Some(&dir.path().join("nope.toml")),
        test_env(&[]),
        &FlagOverrides::default(),
    )
    .unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
}

#[test]
fn bad_values_name_the_key() {
    let cases = [
        (("FLASHSALE_HTTP__BODY_BYTES_MAX", "lots"), "body_bytes_max"),
        (
            ("FLASHSALE_HTTP__BODY_BYTES_MAX", "0"),
            "http.body_bytes_max",
        ),
        (("FLASHSALE_HTTP__NO_SUCH_LIMIT", "1"), "no_such_limit"),
        (("FLASHSALE_WRITERS__COUNT", "1000"), "writers.count"),
        (("FLASHSALE_ADMIN_TOKEN", "short"), "FLASHSALE_ADMIN_TOKEN"),
        (
            ("FLASHSALE_BUYER_JWT_SECRET", "short"),
            "FLASHSALE_BUYER_JWT_SECRET",
        ),
        (("FLASHSALE_LISTEN", "not an address"), "listen"),
        (("FLASHSALE_LOG_FORMAT", "xml"), "log_format"),
    ];
    for ((key, value), named) in cases {
        let error = load(&[(key, value)], FlagOverrides::default()).unwrap_err();
        assert!(error.contains(named), "{key}={value}: {error}");
    }
}

#[test]
fn secrets_are_read_from_the_environment_and_never_printed() {
    let config = load(&[], FlagOverrides::default()).unwrap();
    assert!(config.require_admin_token().is_ok());
    assert!(config.require_buyer_jwt_secret().is_ok());
    let debug = format!("{config:?}");
    assert!(!debug.contains(crate::support::ADMIN_TOKEN), "{debug}");
    assert!(!debug.contains(crate::support::BUYER_SECRET), "{debug}");
    let bare = Config::load(None, Vec::new(), &FlagOverrides::default()).unwrap();
    let error = bare.require_admin_token().unwrap_err().to_string();
    assert!(error.contains("FLASHSALE_ADMIN_TOKEN"), "{error}");
}
