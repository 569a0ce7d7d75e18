//! The series the status page shows, read back from the node's own Prometheus registry.

use crate::metrics::names;

/// The series the page shows, read from the node's own Prometheus registry.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// `names::CONNECTIONS_OPEN`.
    pub(super) connections: f64,
    /// `names::SUBSCRIPTIONS_ACTIVE`.
    pub(super) subscriptions: f64,
    /// `names::CHANNELS_ACTIVE`.
    pub(super) channels: f64,
    /// `names::PUBLICATIONS`, every namespace.
    pub(super) publications: f64,
    /// `names::DELIVERED`, every namespace.
    pub(super) delivered: f64,
    /// `names::ACKS`.
    pub(super) acks: f64,
    /// `names::ACKS_OUTSTANDING`.
    pub(super) acks_outstanding: f64,
    /// `names::REDELIVERIES`.
    pub(super) redeliveries: f64,
    /// `names::DELIVERY_FAILURES` with reason `ack_timeout`.
    pub(super) ack_timeouts: f64,
}

/// Sums the series of interest (over their labels) from Prometheus text.
pub(super) fn counters(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l));
        match name {
            names::CONNECTIONS_OPEN => c.connections += value,
            names::SUBSCRIPTIONS_ACTIVE => c.subscriptions += value,
            names::CHANNELS_ACTIVE => c.channels += value,
            names::PUBLICATIONS => c.publications += value,
            names::DELIVERED => c.delivered += value,
            names::ACKS => c.acks += value,
            names::ACKS_OUTSTANDING => c.acks_outstanding += value,
            names::REDELIVERIES => c.redeliveries += value,
            names::DELIVERY_FAILURES if labels.contains("\"ack_timeout\"") => {
                c.ack_timeouts += value
            }
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_labels_and_pick_ack_timeouts() {
        let text = "# HELP x\n\
            gateway_publications_total{namespace=\"account-activity.v1\"} 5\n\
            gateway_publications_total{namespace=\"market-data.v1\"} 2\n\
            gateway_connections_open 3\n\
            gateway_delivery_failures_total{reason=\"ack_timeout\"} 1\n\
            gateway_delivery_failures_total{reason=\"other\"} 9\n";
        let c = counters(text);
        assert_eq!(c.publications, 7.0);
        assert_eq!(c.connections, 3.0);
        assert_eq!(c.ack_timeouts, 1.0);
        assert_eq!(
            c.acks_outstanding, 0.0,
            "absent until the first ack-mode push"
        );
    }
}
