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
    assert_eq!(config.http.body_bytes_max.get(), 4096);
    let config = load(
        &[
            ("FLASHSALE_HTTP__BODY_BYTES_MAX", "8192"),
            ("FLASHSALE_LISTEN", "127.0.0.1:9000"),
        ],
        FlagOverrides::default(),
    )
    .unwrap();
    assert_eq!(config.http.body_bytes_max.get(), 8192);
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
    assert_eq!(config.http.body_bytes_max.get(), 2000);
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
        // Zeros refused by the NonZero types of the components' own configs.
        (("FLASHSALE_WRITERS__BATCH_MAX", "0"), "writers.batch_max"),
        (("FLASHSALE_REAPER__INTERVAL_MS", "0"), "reaper.interval_ms"),
        (
            ("FLASHSALE_RESERVATIONS__LEASE_TTL_MS", "0"),
            "reservations.lease_ttl_ms",
        ),
        (("FLASHSALE_NATS__REPLICAS", "0"), "nats.replicas"),
        (
            ("FLASHSALE_POSTGRES__CONNECTIONS_MAX", "0"),
            "postgres.connections_max",
        ),
        (
            ("FLASHSALE_QUEUE__COMMIT_BATCH_MAX", "0"),
            "queue.commit_batch_max",
        ),
        (
            ("FLASHSALE_RESERVATIONS__DESIGN", "fast"),
            "reservations.design",
        ),
        (("FLASHSALE_FILTERS__NO_SUCH_LAYER", "1"), "no_such_layer"),
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

#[test]
fn backends_are_chosen_by_url_from_flags_environment_or_file() {
    use flashsale::config::{BackendFlags, Deployment};
    let config = load(&[], FlagOverrides::default()).unwrap();
    assert!(matches!(
        config.deployment().unwrap(),
        Deployment::Embedded { orders_file } if orders_file.ends_with("orders.sqlite")
    ));

    let shared = Deployment::Shared {
        redis_url: "redis://10.0.0.5:6379".into(),
        nats_url: "nats://10.0.0.6:4222".into(),
        postgres_url: "postgres://fs@10.0.0.7:5432/fs".into(),
    };
    let flags = FlagOverrides {
        backends: BackendFlags {
            stock: Some("redis://10.0.0.5:6379".into()),
            queue: Some("nats://10.0.0.6:4222".into()),
            orders: Some("postgres://fs@10.0.0.7:5432/fs".into()),
        },
        ..Default::default()
    };
    assert_eq!(load(&[], flags).unwrap().deployment().unwrap(), shared);
    let env = [
        ("FLASHSALE_BACKENDS__STOCK", "redis://10.0.0.5:6379"),
        ("FLASHSALE_BACKENDS__QUEUE", "nats://10.0.0.6:4222"),
        (
            "FLASHSALE_BACKENDS__ORDERS",
            "postgres://fs@10.0.0.7:5432/fs",
        ),
    ];
    assert_eq!(
        load(&env, FlagOverrides::default())
            .unwrap()
            .deployment()
            .unwrap(),
        shared
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "[backends]\norders = \"sqlite:///tmp/x/orders.db\"\n",
    )
    .unwrap();
    let config = Config::load(Some(file.path()), test_env(&[]), &FlagOverrides::default()).unwrap();
    assert_eq!(
        config.deployment().unwrap(),
        Deployment::Embedded {
            orders_file: "/tmp/x/orders.db".into()
        }
    );
}

#[test]
fn mixed_or_unknown_backends_are_refused_naming_the_fix() {
    let error = load(
        &[("FLASHSALE_BACKENDS__STOCK", "memcached://10.0.0.5")],
        FlagOverrides::default(),
    )
    .unwrap_err();
    assert!(
        error.contains("backends.stock") && error.contains("redis://"),
        "{error}"
    );

    // Stock in memory next to a shared order store would oversell on a second node.
    let error = load(
        &[(
            "FLASHSALE_BACKENDS__ORDERS",
            "postgres://fs:hunter2@10.0.0.7/fs",
        )],
        FlagOverrides::default(),
    )
    .unwrap_err();
    assert!(error.contains("mixes embedded and shared"), "{error}");
    assert!(!error.contains("hunter2"), "passwords never show: {error}");

    // A lost ledger may be rebuilt only after every in-flight publish has finished.
    let error = load(
        &[
            ("FLASHSALE_BACKENDS__STOCK", "redis://10.0.0.5:6379"),
            ("FLASHSALE_BACKENDS__QUEUE", "nats://10.0.0.6:4222"),
            ("FLASHSALE_BACKENDS__ORDERS", "postgres://fs@10.0.0.7/fs"),
            ("FLASHSALE_CLUSTER__REBUILD_FENCE_MS", "1000"),
        ],
        FlagOverrides::default(),
    )
    .unwrap_err();
    assert!(error.contains("cluster.rebuild_fence_ms"), "{error}");
}
