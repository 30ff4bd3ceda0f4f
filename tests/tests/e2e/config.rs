//! Configuration and command line: bad values exit 64 naming the key, `--check-config`, and the file < env < flag order.

use std::time::Duration;

use herald_tests::{Finished, Herald, free_port};

/// Herald validates and exits; this only guards against a hang.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

fn assert_exit_64_naming(finished: &Finished, key: &str) {
    assert_eq!(
        finished.status.code(),
        Some(64),
        "exit status for a bad config naming {key}; stderr:\n{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains(key),
        "stderr names the offending key {key:?}:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stdout.contains("herald listening on"),
        "nothing is bound before the config is valid:\n{}",
        finished.stdout
    );
}

#[test]
fn check_config_accepts_a_valid_file() {
    let toml = "listen = \"127.0.0.1:0\"\n\n[publish]\nsecret = \"change-me-to-32-random-bytes\"\n\n[history]\nsize = 200\nttl_secs = 900\n\n[log]\nformat = \"json\"\n";
    let finished = Herald::builder()
        .config_toml(toml)
        .arg("--check-config")
        .run_to_exit(EXIT_TIMEOUT);
    assert_eq!(
        finished.status.code(),
        Some(0),
        "stderr:\n{}",
        finished.stderr
    );
}

#[test]
fn check_config_with_a_bad_file_exits_64_naming_the_key() {
    let cases = [
        ("[history]\nsize = \"lots\"\n", "history.size"),
        (
            "[connection]\noutbox_max_bytes = -1\n",
            "connection.outbox_max_bytes",
        ),
        (
            "[publish]\ntrusted_networks = [\"not-a-network\"]\n",
            "publish.trusted_networks",
        ),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("listen = \"nowhere\"\n", "listen"),
        ("engine = \"carrier-pigeon\"\n", "engine"),
    ];
    for (toml, key) in cases {
        let finished = Herald::builder()
            .no_listen_flag()
            .config_toml(toml)
            .arg("--check-config")
            .run_to_exit(EXIT_TIMEOUT);
        assert_exit_64_naming(&finished, key);
    }
}

#[test]
fn a_bad_config_stops_a_normal_start_with_64() {
    let finished = Herald::builder()
        .config_toml("[history]\nsize = \"lots\"\n")
        .run_to_exit(EXIT_TIMEOUT);
    assert_exit_64_naming(&finished, "history.size");
}

#[test]
fn a_config_file_that_is_not_toml_exits_64() {
    let finished = Herald::builder()
        .config_toml("this is [not toml\n")
        .arg("--check-config")
        .run_to_exit(EXIT_TIMEOUT);
    assert_eq!(
        finished.status.code(),
        Some(64),
        "stderr:\n{}",
        finished.stderr
    );
}

#[test]
fn an_unknown_herald_env_var_exits_64_naming_it() {
    let finished = Herald::builder()
        .env("HERALD_HISTORY_SIZ", "5")
        .run_to_exit(EXIT_TIMEOUT);
    assert_exit_64_naming(&finished, "HERALD_HISTORY_SIZ");
    let finished = Herald::builder()
        .env("HERALD_HISTORY_SIZ", "5")
        .arg("--check-config")
        .run_to_exit(EXIT_TIMEOUT);
    assert_exit_64_naming(&finished, "HERALD_HISTORY_SIZ");
}

#[test]
fn a_bad_env_value_exits_64_naming_it() {
    let finished = Herald::builder()
        .env("HERALD_HISTORY_SIZE", "lots")
        .run_to_exit(EXIT_TIMEOUT);
    assert_eq!(
        finished.status.code(),
        Some(64),
        "stderr:\n{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("HERALD_HISTORY_SIZE") || finished.stderr.contains("history.size"),
        "stderr names the key:\n{}",
        finished.stderr
    );
}

#[test]
fn listen_comes_from_file_then_env_then_flag() {
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let file = format!("listen = \"127.0.0.1:{file_port}\"\n");

    let herald = Herald::builder()
        .no_listen_flag()
        .config_toml(&file)
        .start();
    assert_eq!(herald.addr.port(), file_port, "the file's listen");
    drop(herald);

    let herald = Herald::builder()
        .no_listen_flag()
        .config_toml(&file)
        .env("HERALD_LISTEN", format!("127.0.0.1:{env_port}"))
        .start();
    assert_eq!(
        herald.addr.port(),
        env_port,
        "HERALD_LISTEN overrides the file"
    );
    drop(herald);

    let herald = Herald::builder()
        .config_toml(&file)
        .env("HERALD_LISTEN", format!("127.0.0.1:{env_port}"))
        .listen(format!("127.0.0.1:{flag_port}"))
        .start();
    assert_eq!(herald.addr.port(), flag_port, "--listen overrides the env");
}

#[tokio::test]
async fn env_overrides_the_file() {
    let herald = Herald::builder()
        .config_toml("[history]\nsize = 50\n")
        .env("HERALD_HISTORY_SIZE", "2")
        .env("HERALD_HISTORY_MIN_AGE_SECS", "0")
        .start();
    for i in 1..=5 {
        herald.publish("public", &i.to_string()).await;
    }
    let history = herald.get("/api/history?channel=public").await.json();
    let offsets: Vec<u64> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(
        offsets,
        [4, 5],
        "HERALD_HISTORY_SIZE=2 wins over the file's 50"
    );
}

#[test]
fn check_config_binds_nothing() {
    // A port in use would make a real start fail; --check-config must not try to bind it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let finished = Herald::builder()
        .listen(format!("127.0.0.1:{port}"))
        .arg("--check-config")
        .run_to_exit(EXIT_TIMEOUT);
    assert_eq!(
        finished.status.code(),
        Some(0),
        "stderr:\n{}",
        finished.stderr
    );
}

#[test]
fn the_dev_site_refuses_a_network_address_unless_allowed() {
    // `--check-config` validates without binding: nothing listens beyond loopback here.
    for (flags, env) in [
        (&["--listen", "0.0.0.0:8080"][..], None),
        (&[][..], Some(("HERALD_LISTEN", "[::]:8080"))),
    ] {
        let mut builder = Herald::builder().no_listen_flag().arg("--check-config");
        for flag in flags {
            builder = builder.arg(*flag);
        }
        if let Some((key, value)) = env {
            builder = builder.env(key, value);
        }
        let finished = builder.run_to_exit(EXIT_TIMEOUT);
        assert_exit_64_naming(&finished, "listen");
        assert!(
            finished.stderr.contains("allow_dev_site_on_network"),
            "the error says how to allow it:\n{}",
            finished.stderr
        );
    }
    let allowed = |builder: herald_tests::HeraldBuilder| {
        let finished = builder
            .no_listen_flag()
            .arg("--check-config")
            .arg("--listen")
            .arg("0.0.0.0:8080")
            .run_to_exit(EXIT_TIMEOUT);
        assert_eq!(finished.status.code(), Some(0), "{}", finished.stderr);
    };
    allowed(Herald::builder().arg("--allow-dev-site-on-network"));
    allowed(Herald::builder().env("HERALD_PUBLISH_ALLOW_DEV_SITE_ON_NETWORK", "true"));
    allowed(Herald::builder().env("HERALD_PUBLISH_SECRET", "a-secret-of-16-bytes-or-more"));
}

#[test]
fn a_short_publish_secret_or_token_key_exits_64() {
    for secret in ["x", "fifteen-bytes-x"] {
        let finished = Herald::builder()
            .env("HERALD_PUBLISH_SECRET", secret)
            .run_to_exit(EXIT_TIMEOUT);
        assert_exit_64_naming(&finished, "publish.secret");
    }
    let finished = Herald::builder()
        .env("HERALD_PUBLISH_SECRET", "sixteen-bytes-ok")
        .env("HERALD_PUBLISH_TOKEN_KEY", "short")
        .run_to_exit(EXIT_TIMEOUT);
    assert_exit_64_naming(&finished, "publish.token_key");
    let finished = Herald::builder()
        .config_toml(
            "[[sites]]\nid = \"a\"\nkey = \"ka\"\nsecrets = [\"secret-a-0123456\"]\ntoken_keys = [\"short\"]\n",
        )
        .run_to_exit(EXIT_TIMEOUT);
    assert_exit_64_naming(&finished, "sites[0].token_keys");
}
