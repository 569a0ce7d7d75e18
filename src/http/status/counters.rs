//! The series the status page shows, read back from the node's own Prometheus registry.

/// The series the page shows, read from the node's own Prometheus registry.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connections: f64,
    pub(super) subscriptions: f64,
    pub(super) channels: f64,
    pub(super) publications: f64,
    pub(super) delivered: f64,
    pub(super) acks: f64,
    pub(super) acks_outstanding: f64,
    pub(super) redeliveries: f64,
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
            "gateway_connections_open" => c.connections += value,
            "gateway_subscriptions_active" => c.subscriptions += value,
            "gateway_channels_active" => c.channels += value,
            "gateway_publications_total" => c.publications += value,
            "gateway_notifications_delivered_total" => c.delivered += value,
            "gateway_acks_total" => c.acks += value,
            "gateway_acks_outstanding" => c.acks_outstanding += value,
            "gateway_redeliveries_total" => c.redeliveries += value,
            "gateway_delivery_failures_total" if labels.contains("\"ack_timeout\"") => {
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
