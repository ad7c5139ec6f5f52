//! Prometheus metrics of configured jobs, from their status records
//! ([`crate::status`]): the exposition text (OpenMetrics, which Prometheus
//! and node_exporter's textfile collector both read) that both
//! `sstream sync --metrics-textfile DIR` and the server's `/metrics` give.
//!
//! Every metric is a gauge labelled `job`:
//!
//! | metric | |
//! |---|---|
//! | `sstream_last_success_timestamp_seconds` | end of the last successful run (Unix time; 0: never) |
//! | `sstream_last_run_timestamp_seconds` | end of the last run |
//! | `sstream_last_run_success` | 1 if the last run succeeded, else 0 |
//! | `sstream_last_run_duration_seconds` | how long the last run took |
//! | `sstream_last_run_changed` | 1 if the last run published or removed anything |
//! | `sstream_last_run_downloaded_bytes` | bytes the last run downloaded |
//! | `sstream_last_run_downloaded_files` | files the last run downloaded |
//! | `sstream_last_run_removed_files` | files the last run removed |
//! | `sstream_mirror_size_bytes` | size of the mirror (its directory, or its bucket's objects) after the last run |

use crate::status::StatusRecord;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// The label set of every metric.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

/// One metric: its name (before the unit), unit, help and value.
struct Metric {
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
    value: fn(&StatusRecord) -> f64,
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

const METRICS: &[Metric] = &[
    Metric {
        name: "last_success_timestamp",
        unit: Some(Unit::Seconds),
        help: "End of the job's last successful run, Unix time (0: never)",
        value: |r| r.last_success.map_or(0.0, |t| t.unix_seconds()),
    },
    Metric {
        name: "last_run_timestamp",
        unit: Some(Unit::Seconds),
        help: "End of the job's last run, Unix time",
        value: |r| r.finished.unix_seconds(),
    },
    Metric {
        name: "last_run_success",
        unit: None,
        help: "1 if the job's last run succeeded, else 0",
        value: |r| flag(r.is_ok()),
    },
    Metric {
        name: "last_run_duration",
        unit: Some(Unit::Seconds),
        help: "How long the job's last run took",
        value: |r| r.duration().as_secs_f64(),
    },
    Metric {
        name: "last_run_changed",
        unit: None,
        help: "1 if the job's last run published or removed anything, else 0",
        value: |r| flag(r.changed),
    },
    Metric {
        name: "last_run_downloaded",
        unit: Some(Unit::Bytes),
        help: "Bytes the job's last run downloaded",
        value: |r| r.bytes_downloaded as f64,
    },
    Metric {
        name: "last_run_downloaded_files",
        unit: None,
        help: "Files the job's last run downloaded",
        value: |r| r.files_downloaded as f64,
    },
    Metric {
        name: "last_run_removed_files",
        unit: None,
        help: "Files the job's last run removed from the mirror",
        value: |r| r.files_removed as f64,
    },
    Metric {
        name: "mirror_size",
        unit: Some(Unit::Bytes),
        help: "Size of the job's mirror (its directory or its bucket's objects) after its last run",
        value: |r| r.bytes_on_disk as f64,
    },
];

/// The exposition text (OpenMetrics, ending in `# EOF`) of `records`, one
/// sample per job and metric, jobs in the order given. Without records,
/// only the metric families.
pub fn render(records: &[StatusRecord]) -> String {
    let mut registry = Registry::with_prefix("sstream");
    registry.register_collector(Box::new(Records(records.to_vec())));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// The records a scrape reports, as a collector: the values are the
/// records' (constant gauges), in a stable order.
#[derive(Debug)]
struct Records(Vec<StatusRecord>);

impl Collector for Records {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for metric in METRICS {
            let mut family = encoder.encode_descriptor(
                metric.name,
                metric.help,
                metric.unit.as_ref(),
                MetricType::Gauge,
            )?;
            for record in &self.0 {
                let label = JobLabel {
                    job: record.job.clone(),
                };
                ConstGauge::new((metric.value)(record)).encode(family.encode_family(&label)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::RunResult;

    #[test]
    fn one_sample_per_job_and_metric() {
        let ok = StatusRecord {
            job: "maas-stable".into(),
            source: "http://h/".into(),
            started: "2025-07-18T02:30:00Z".parse().unwrap(),
            finished: "2025-07-18T02:30:10.5Z".parse().unwrap(),
            result: RunResult::Ok,
            errors: vec![],
            changed: true,
            files_downloaded: 7,
            bytes_downloaded: 4096,
            files_removed: 2,
            bytes_on_disk: 1 << 20,
            last_success: Some("2025-07-18T02:30:10.5Z".parse().unwrap()),
            verified_with: None,
        };
        let failed = StatusRecord {
            job: "never-ok".into(),
            result: RunResult::Failed,
            errors: vec!["boom".into()],
            last_success: None,
            ..ok.clone()
        };
        let text = render(&[ok, failed]);
        for line in [
            "# TYPE sstream_last_success_timestamp_seconds gauge",
            "sstream_last_success_timestamp_seconds{job=\"maas-stable\"} 1752805810.5",
            "sstream_last_success_timestamp_seconds{job=\"never-ok\"} 0.0",
            "sstream_last_run_success{job=\"maas-stable\"} 1.0",
            "sstream_last_run_success{job=\"never-ok\"} 0.0",
            "sstream_last_run_duration_seconds{job=\"maas-stable\"} 10.5",
            "sstream_last_run_downloaded_bytes{job=\"maas-stable\"} 4096.0",
            "sstream_last_run_downloaded_files{job=\"maas-stable\"} 7.0",
            "sstream_last_run_removed_files{job=\"maas-stable\"} 2.0",
            "sstream_mirror_size_bytes{job=\"maas-stable\"} 1048576.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
