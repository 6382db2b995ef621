//! `COS_CLUSTER_*`: whether this node forms a cluster, how it is named and reached, and how peers are found.

use std::net::SocketAddr;
use std::time::Duration;

use super::SettingsError;
use super::sources::Sources;
use crate::headers::parse_header_list;
use crate::settings::{ClusterDiscovery, ClusterSettings, DeploymentMode, StoreSettings};

/// Reads the cluster settings; `None` when this node runs alone.
pub(super) fn load_cluster(
    sources: &Sources<'_>,
    store: &StoreSettings,
    deployment_mode: DeploymentMode,
    service_name: &str,
    grpc_listen_address: SocketAddr,
    pod_ip: Option<&str>,
) -> Result<Option<ClusterSettings>, SettingsError> {
    let enabled_raw = sources.global("cluster_enabled", "false")?;
    let seeds_raw = sources.global("cluster_seeds", "")?;
    let replicas_raw = sources.global("replica_count", "1")?;
    let required_contact_points: usize =
        replicas_raw.integer_in(1..=1000, "must be an integer between 1 and 1000")?;
    let seeds = parse_header_list(&seeds_raw.text);
    let enabled = enabled_raw.boolean()? || !seeds.is_empty() || required_contact_points > 1;
    if !enabled {
        return Ok(None);
    }
    if matches!(store, StoreSettings::Sqlite(_)) {
        let reason = "a cluster of more than one node requires PostgreSQL: set COS_DB_HOST \
                      (or COS_STORE=postgres) and the other COS_DB_* settings";
        return Err(if !seeds.is_empty() {
            seeds_raw.invalid(reason)
        } else if required_contact_points > 1 {
            replicas_raw.invalid(reason)
        } else {
            enabled_raw.invalid(reason)
        });
    }
    let port: u16 = sources
        .global("cluster_port", "9010")?
        .integer_in(0..=65535, "must be an integer between 0 and 65535")?;
    let node_name_raw = sources.global("cluster_node_name", &format!("cos-{port}"))?;
    let node_name = node_name_raw.trimmed().to_string();
    let valid_name = !node_name.is_empty()
        && node_name.len() <= 64
        && node_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !valid_name {
        return Err(node_name_raw.invalid(
            "must be 1 to 64 letters, digits, '-', '_' or '.' (unique among the nodes of a host)",
        ));
    }
    let default_host = if grpc_listen_address.ip().is_unspecified() {
        pod_ip.unwrap_or("127.0.0.1").to_string()
    } else {
        grpc_listen_address.ip().to_string()
    };
    let host_raw = sources.global("cluster_host", &default_host)?;
    let advertised_host = host_raw.trimmed().to_string();
    if advertised_host.is_empty() || advertised_host.contains(char::is_whitespace) {
        return Err(
            host_raw.invalid("must be a host name or address that the other nodes can reach")
        );
    }
    let secret_raw = sources.global("cluster_secret", "")?;
    if secret_raw.text.is_empty() {
        return Err(SettingsError::Missing {
            name: "COS_CLUSTER_SECRET".to_string(),
            reason: "a cluster needs a shared secret: set the same value on every node".to_string(),
        });
    }
    let discovery = if !seeds.is_empty() {
        for seed in &seeds {
            let valid = seed
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(seeds_raw.invalid(format!(
                    "{seed:?} is not host:port; use a comma-separated list such as 10.0.0.1:9010,10.0.0.2:9010"
                )));
            }
        }
        ClusterDiscovery::StaticSeeds(seeds)
    } else {
        match deployment_mode {
            DeploymentMode::Docker => ClusterDiscovery::Dns {
                service_name: service_name.to_string(),
            },
            DeploymentMode::Kubernetes => {
                let label = sources.global("kubernetes_app_label", "")?;
                if label.trimmed().is_empty() {
                    return Err(SettingsError::Missing {
                        name: "COS_KUBERNETES_APP_LABEL".to_string(),
                        reason: "kubernetes discovery lists the pods labelled app=<this value>"
                            .to_string(),
                    });
                }
                ClusterDiscovery::Kubernetes {
                    app_label: label.trimmed().to_string(),
                }
            }
        }
    };
    let heartbeat_interval = positive_duration(sources, "cluster_heartbeat_interval", "1s")?;
    let unreachable_after = positive_duration(sources, "cluster_unreachable_after", "5s")?;
    let down_after = positive_duration(sources, "cluster_down_after", "10s")?;
    if unreachable_after <= heartbeat_interval {
        return Err(sources
            .global("cluster_unreachable_after", "5s")?
            .invalid("must be longer than COS_CLUSTER_HEARTBEAT_INTERVAL"));
    }
    Ok(Some(ClusterSettings {
        node_name,
        advertised_host,
        port,
        secret: secret_raw.text,
        discovery,
        required_contact_points,
        heartbeat_interval,
        unreachable_after,
        down_after,
    }))
}

fn positive_duration(
    sources: &Sources<'_>,
    key: &str,
    default: &str,
) -> Result<Duration, SettingsError> {
    let raw = sources.global(key, default)?;
    let duration = raw.duration("must be a duration such as 500ms, 5s or 1m")?;
    if duration < Duration::from_millis(10) {
        return Err(raw.invalid("must be at least 10ms"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::options;
    use crate::settings::{ClusterDiscovery, Settings};

    const BASE: [(&str, &str); 3] = [
        ("COS_WRITE_SIDE_HOST", "handler"),
        ("COS_WRITE_SIDE_PORT", "50051"),
        ("COS_DB_HOST", "db"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Result<Settings, String> {
        let mut environment = BASE.to_vec();
        environment.extend_from_slice(extra);
        Settings::load(&options(&environment)).map_err(|error| error.to_string())
    }

    #[test]
    fn a_single_node_has_no_cluster_settings() {
        assert!(
            with(&[])
                .map(|settings| settings.cluster.is_none())
                .unwrap_or(false)
        );
    }

    #[test]
    fn seeds_form_a_cluster_with_defaults() {
        let settings = with(&[
            ("COS_CLUSTER_SEEDS", "127.0.0.2:9010, 127.0.0.3:9010"),
            ("COS_CLUSTER_SECRET", "s3cret"),
            ("COS_ADDRESS", "127.0.0.2"),
        ])
        .expect("valid");
        let cluster = settings.cluster.expect("clustered");
        assert_eq!(cluster.full_name(), "cos-9010@127.0.0.2");
        assert_eq!(
            cluster.discovery,
            ClusterDiscovery::StaticSeeds(vec!["127.0.0.2:9010".into(), "127.0.0.3:9010".into()])
        );
    }

    #[test]
    fn a_cluster_needs_a_secret_and_postgresql() {
        let missing = with(&[("COS_CLUSTER_ENABLED", "true")]).expect_err("no secret");
        assert!(missing.contains("COS_CLUSTER_SECRET"), "{missing}");
        let mut environment = vec![
            ("COS_WRITE_SIDE_HOST", "handler"),
            ("COS_WRITE_SIDE_PORT", "50051"),
            ("COS_REPLICA_COUNT", "2"),
            ("COS_CLUSTER_SECRET", "s"),
        ];
        environment.push(("COS_STORE", "sqlite"));
        let error = Settings::load(&options(&environment))
            .expect_err("sqlite")
            .to_string();
        assert!(
            error.contains("COS_REPLICA_COUNT") && error.contains("requires PostgreSQL"),
            "{error}"
        );
    }

    #[test]
    fn bad_seeds_and_kubernetes_without_label_are_refused() {
        let error = with(&[("COS_CLUSTER_SEEDS", "nohost"), ("COS_CLUSTER_SECRET", "s")])
            .expect_err("bad seed");
        assert!(
            error.contains("COS_CLUSTER_SEEDS") && error.contains("host:port"),
            "{error}"
        );
        let error = with(&[
            ("COS_CLUSTER_ENABLED", "true"),
            ("COS_CLUSTER_SECRET", "s"),
            ("COS_DEPLOYMENT_MODE", "kubernetes"),
        ])
        .expect_err("no label");
        assert!(error.contains("COS_KUBERNETES_APP_LABEL"), "{error}");
    }
}
