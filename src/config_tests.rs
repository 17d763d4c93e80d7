use super::*;

#[test]
fn empty_file_is_the_defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.hosts, vec!["localhost"]);
    assert_eq!(c.oauth_expire, 2_592_000);
    assert!(c
        .listen
        .iter()
        .any(|l| l.module == Module::Http && l.port == 5280 && !l.tls));
    assert!(c
        .listen
        .iter()
        .any(|l| l.module == Module::Http && l.port == 5443 && l.tls));
    assert_eq!(c.oauth_client_id_check, ClientIdCheck::Db);
}

#[test]
fn errors_name_the_key() {
    let e = Config::parse("oauth_expire = \"soon\"").unwrap_err();
    assert_eq!(e.key, "oauth_expire");
    let e = Config::parse("[[listen]]\nmodule = \"http\"\nport = 99999\n").unwrap_err();
    assert_eq!(e.key, "listen[0].port");
    let e = Config::parse("[[listen]]\nmodule = \"smtp\"\nport = 25\n").unwrap_err();
    assert_eq!(e.key, "listen[0].module");
    let e = Config::parse("oauth_client_id_check = \"maybe\"").unwrap_err();
    assert_eq!(e.key, "oauth_client_id_check");
    let e = Config::parse("unknown_key = 1").unwrap_err();
    assert!(e.to_string().contains("unknown_key"), "{e}");
    let e = Config::parse("oauth_access = \"some\"").unwrap_err();
    assert_eq!(e.key, "oauth_access");
    let e = Config::parse("hosts = []").unwrap_err();
    assert_eq!(e.key, "hosts");
    // The service tables name their key inside the table.
    let e = Config::parse("[pep]\nmax_nodes = 0\n").unwrap_err();
    assert_eq!(e.key, "pep.max_nodes");
    let e = Config::parse("[pep]\nmax_items = -1\n").unwrap_err();
    assert_eq!(e.key, "pep.max_items");
    let e = Config::parse("[muc]\nbogus = 1\n").unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let c = Config::parse("[pep]\nmax_items = 10\n[muc]\nenabled = true\n").unwrap();
    assert_eq!(c.pep.max_items, 10);
    assert_eq!(c.pep.max_nodes, 100, "the others keep their defaults");
    assert!(c.services().is_on(crate::xmpp::services::Service::Muc));
}

#[test]
fn the_paho_interop_file_parses() {
    use crate::mqtt::acl::{Request, Who};
    let c = Config::parse(include_str!("../configs/paho-interop.toml")).unwrap();
    assert!(c.mqtt_allow_anonymous);
    assert_eq!(c.mqtt_max_keepalive, 60);
    let anyone = Who {
        account: "",
        client_id: "myclientid",
        domain: "localhost",
    };
    assert_eq!(
        c.mqtt_acl
            .check(anyone, Request::Subscribe, "test/nosubscribe"),
        Err(0x80)
    );
    assert!(c.mqtt_acl.allows(anyone, Request::Subscribe, "#"));
}

#[test]
fn c2s_listeners_and_the_documented_file() {
    let c = Config::parse(include_str!("../configs/petrel.toml")).unwrap();
    let d = Config::default();
    assert_eq!(c.negotiation_timeout, d.negotiation_timeout);
    assert_eq!(c.max_stanza_size, d.max_stanza_size);
    let ports = |c: &Config| -> Vec<(u16, bool, bool)> {
        c.listen
            .iter()
            .map(|l| (l.port, l.tls, l.starttls))
            .collect()
    };
    assert_eq!(ports(&c), ports(&d));
    let starttls = d.listen.iter().find(|l| l.port == 5222).unwrap();
    assert!(
        starttls.starttls && !starttls.requires_starttls(),
        "loopback"
    );
    let e = Config::parse("negotiation_timeout = 0").unwrap_err();
    assert_eq!(e.key, "negotiation_timeout");
    // The OAuth keys as documented are the defaults.
    let oauth = |c: &Config| {
        (
            c.oauth_legacy_grants,
            c.oauth_expire_with_refresh,
            c.oauth_refresh_expire,
            c.oauth_code_expire,
            c.oauth_max_pending_codes,
            c.oauth_device_code_expire,
            c.oauth_device_interval,
            c.oauth_max_device_codes_per_ip,
            c.oauth_max_scope_length,
        )
    };
    assert_eq!(oauth(&c), oauth(&d));
    for bad in [
        "oauth_code_expire = 61",
        "oauth_code_expire = 0",
        "oauth_max_pending_codes = 0",
        "oauth_device_interval = 0",
        "oauth_refresh_expire = 0",
    ] {
        let e = Config::parse(bad).unwrap_err();
        assert!(bad.starts_with(&e.key), "{bad}: {e}");
    }
}

#[test]
fn access_list_and_listeners() {
    let c = Config::parse(
        "oauth_access = [\"Alice@Localhost\"]\n[[listen]]\nmodule = \"http\"\nport = 0\n",
    )
    .unwrap();
    assert_eq!(
        c.oauth_access,
        OauthAccess::Only(vec!["alice@localhost".into()])
    );
    assert_eq!(c.listen.len(), 1);
    assert!(c.listen[0].ip.is_loopback());
}

#[test]
fn bridge_rules_are_checked_and_the_documented_table_is_the_default() {
    let c = Config::parse(include_str!("../configs/petrel.toml")).unwrap();
    assert_eq!(c.bridge, crate::bridge::BridgeConfig::default());
    let ok = Config::parse(
        "[[bridge.rule]]\nmqtt = \"a/+/b\"\nnode = \"n-{1}\"\ndirection = \"to_mqtt\"\n",
    )
    .unwrap();
    assert_eq!(ok.bridge.rule.len(), 1);
    for (bad, names) in [
        (
            "[[bridge.rule]]\nmqtt = \"a/+\"\nnode = \"n\"\n",
            "wildcard 1",
        ),
        (
            "[[bridge.rule]]\nmqtt = \"a\"\nnode = \"n\"\nqos = 3\n",
            "qos",
        ),
        (
            "[[bridge.rule]]\nmqtt = \"a\"\nnode = \"n\"\ndirection = \"up\"\n",
            "direction",
        ),
        ("[bridge]\nmax_payload = 0\n", "max_payload"),
    ] {
        let e = Config::parse(bad).unwrap_err().to_string();
        assert!(e.contains("bridge") && e.contains(names), "{bad}: {e}");
    }
}

#[test]
fn the_cluster_example_is_three_nodes_of_one_service() {
    let nodes = [
        include_str!("../configs/cluster/n1.toml"),
        include_str!("../configs/cluster/n2.toml"),
        include_str!("../configs/cluster/n3.toml"),
    ]
    .map(|t| Config::parse(t).unwrap());
    let names: std::collections::HashSet<_> = nodes
        .iter()
        .map(|c| c.cluster.as_ref().unwrap().node.clone())
        .collect();
    assert_eq!(names.len(), 3);
    assert!(nodes.iter().all(|c| c.store == nodes[0].store));
    // A cluster without a shared store is refused by name.
    let e = Config::parse("[cluster]\nnats = \"nats://127.0.0.1:4222\"\nnode = \"a\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cluster") && e.contains("postgres"), "{e}");
    // Its limits have defaults and bounds.
    let c = nodes[0].cluster.as_ref().unwrap();
    assert_eq!(c.receive_queue, 65_536);
    let tiny = include_str!("../configs/cluster/n1.toml")
        .replace("node = \"n1\"", "node = \"n1\"\nreceive_queue = 10");
    let e = Config::parse(&tiny).unwrap_err().to_string();
    assert!(e.contains("receive_queue") && e.contains("1024"), "{e}");
    let big = tiny.replace("receive_queue = 10", "receive_queue = 1048576");
    let c = Config::parse(&big).unwrap().cluster.unwrap();
    assert_eq!(c.receive_queue, 1_048_576);
}
