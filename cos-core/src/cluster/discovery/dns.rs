//! DNS discovery (`docker` mode): every A/AAAA record of a service name is a peer, as with Pekko's `pekko-dns`
//! discovery. Uses the system resolver through `tokio::net::lookup_host`, which runs `getaddrinfo` on the
//! blocking pool, so `/etc/hosts` and search domains apply exactly as for any other program in the container.

use super::{DiscoveryError, SeedAddress};

/// Resolves `service_name` once and pairs each address with the cluster `port`.
pub(super) async fn resolve(
    service_name: &str,
    port: u16,
) -> Result<Vec<SeedAddress>, DiscoveryError> {
    let socket_addresses = tokio::net::lookup_host((service_name, port))
        .await
        .map_err(|source| DiscoveryError::DnsLookup {
            service_name: service_name.to_string(),
            source,
        })?;
    Ok(socket_addresses.map(SeedAddress::from).collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{DiscoveryError, DiscoveryMethod, discover, discover_until};

    #[tokio::test]
    async fn dns_discovery_of_localhost_finds_at_least_one_address() {
        let method = DiscoveryMethod::Dns {
            service_name: "localhost".to_string(),
            port: 9010,
        };
        let addresses = discover(&method).await.unwrap();
        assert!(!addresses.is_empty());
        assert!(addresses.iter().all(|address| address.port == 9010));
        assert!(
            addresses
                .iter()
                .any(|address| address.host == "127.0.0.1" || address.host == "::1"),
            "{addresses:?}"
        );
    }

    #[tokio::test]
    async fn dns_discover_until_with_an_unresolvable_name_times_out_with_a_precise_error() {
        let method = DiscoveryMethod::Dns {
            service_name: "cos-discovery-test.invalid".to_string(),
            port: 9010,
        };
        let error = discover_until(
            &method,
            1,
            Duration::from_millis(600),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                error,
                DiscoveryError::Timeout {
                    found: 0,
                    required: 1,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with(
                "discovery of dns name `cos-discovery-test.invalid` (port 9010) timed out after 600ms: \
                 found 0 of 1 required addresses"
            ),
            "{message}"
        );
    }
}
