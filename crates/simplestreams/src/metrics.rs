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
//!
//! and every view ([`crate::view`]) has gauges labelled `view` (and
//! `snapshot` for the first):
//!
//! | metric | |
//! |---|---|
//! | `sstream_view_info` | 1, labelled with the snapshot the view shows |
//! | `sstream_view_snapshot_age_seconds` | age of that snapshot when the metrics were rendered |
//! | `sstream_view_snapshot_created_timestamp_seconds` | when that snapshot was made (Unix time; 0: not known) |
//! | `sstream_view_published_timestamp_seconds` | when the view switched to it (Unix time) |

use crate::status::{StatusRecord, Timestamp};
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

/// One gauge family: its name (before the unit), unit, help, and its
/// value for a sample (a job's record, a view).
struct Gauge<S> {
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
    value: fn(&S) -> f64,
}

/// Encodes each family of `gauges` with one sample per item of `samples`,
/// labelled by `label`, in the order given.
fn encode_gauges<S, L: EncodeLabelSet + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    gauges: &[Gauge<S>],
    samples: &[S],
    label: impl Fn(&S) -> L,
) -> Result<(), std::fmt::Error> {
    for gauge in gauges {
        let mut family = encoder.encode_descriptor(
            gauge.name,
            gauge.help,
            gauge.unit.as_ref(),
            MetricType::Gauge,
        )?;
        for sample in samples {
            ConstGauge::new((gauge.value)(sample)).encode(family.encode_family(&label(sample))?)?;
        }
    }
    Ok(())
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

const METRICS: &[Gauge<StatusRecord>] = &[
    Gauge {
        name: "last_success_timestamp",
        unit: Some(Unit::Seconds),
        help: "End of the job's last successful run, Unix time (0: never)",
        value: |r| r.last_success.map_or(0.0, |t| t.unix_seconds()),
    },
    Gauge {
        name: "last_run_timestamp",
        unit: Some(Unit::Seconds),
        help: "End of the job's last run, Unix time",
        value: |r| r.finished.unix_seconds(),
    },
    Gauge {
        name: "last_run_success",
        unit: None,
        help: "1 if the job's last run succeeded, else 0",
        value: |r| flag(r.is_ok()),
    },
    Gauge {
        name: "last_run_duration",
        unit: Some(Unit::Seconds),
        help: "How long the job's last run took",
        value: |r| r.duration().as_secs_f64(),
    },
    Gauge {
        name: "last_run_changed",
        unit: None,
        help: "1 if the job's last run published or removed anything, else 0",
        value: |r| flag(r.changed),
    },
    Gauge {
        name: "last_run_downloaded",
        unit: Some(Unit::Bytes),
        help: "Bytes the job's last run downloaded",
        value: |r| r.bytes_downloaded as f64,
    },
    Gauge {
        name: "last_run_downloaded_files",
        unit: None,
        help: "Files the job's last run downloaded",
        value: |r| r.files_downloaded as f64,
    },
    Gauge {
        name: "last_run_removed_files",
        unit: None,
        help: "Files the job's last run removed from the mirror",
        value: |r| r.files_removed as f64,
    },
    Gauge {
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
    render_with_views(records, &[], std::time::SystemTime::now())
}

/// What the metrics say about one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSample {
    /// The view's name (its config name, or where it is served).
    pub view: String,
    /// The snapshot it shows.
    pub snapshot: String,
    /// When that snapshot was made (`None`: not known, e.g. removed by
    /// hand).
    pub snapshot_created: Option<Timestamp>,
    /// When the view switched to it.
    pub published: Timestamp,
}

impl ViewSample {
    /// The sample of the view named `view` in the state `state`, its
    /// snapshot's creation time read from the mirror's snapshots (`None`
    /// when they cannot be listed or it is not among them).
    pub fn of(view: &str, state: &crate::view::ViewState) -> ViewSample {
        let snapshot_created = crate::snapshot::list(&state.mirror)
            .ok()
            .and_then(|all| all.into_iter().find(|s| s.name == state.snapshot))
            .map(|s| s.created);
        ViewSample {
            view: view.to_owned(),
            snapshot: state.snapshot.clone(),
            snapshot_created,
            published: state.published,
        }
    }
}

/// [`render`] with a family per view gauge too (see the module
/// documentation): one sample per view, ages taken at `now`.
pub fn render_with_views(
    records: &[StatusRecord],
    views: &[ViewSample],
    now: std::time::SystemTime,
) -> String {
    let mut registry = Registry::with_prefix("sstream");
    registry.register_collector(Box::new(Records(records.to_vec())));
    let views = views.iter().map(|v| ViewAt {
        sample: v.clone(),
        now,
    });
    registry.register_collector(Box::new(Views(views.collect())));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// The label set of the view gauges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ViewLabel {
    view: String,
}

/// The label set of `sstream_view_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ViewInfoLabel {
    view: String,
    snapshot: String,
}

/// A view's sample as a scrape at `now` sees it.
#[derive(Debug)]
struct ViewAt {
    sample: ViewSample,
    now: std::time::SystemTime,
}

const VIEW_METRICS: &[Gauge<ViewAt>] = &[
    Gauge {
        name: "view_snapshot_age",
        unit: Some(Unit::Seconds),
        help: "Age of the snapshot the view shows (0: not known)",
        value: |v| {
            v.sample
                .snapshot_created
                .map_or(0.0, |t| t.age(v.now).as_secs_f64())
        },
    },
    Gauge {
        name: "view_snapshot_created_timestamp",
        unit: Some(Unit::Seconds),
        help: "When the snapshot the view shows was made, Unix time (0: not known)",
        value: |v| v.sample.snapshot_created.map_or(0.0, |t| t.unix_seconds()),
    },
    Gauge {
        name: "view_published_timestamp",
        unit: Some(Unit::Seconds),
        help: "When the view switched to the snapshot it shows, Unix time",
        value: |v| v.sample.published.unix_seconds(),
    },
];

/// The views a scrape reports, as a collector.
#[derive(Debug)]
struct Views(Vec<ViewAt>);

impl Collector for Views {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = Gauge {
            name: "view_info",
            unit: None,
            help: "1 for each view, labelled with the snapshot it shows",
            value: |_: &ViewAt| 1.0,
        };
        encode_gauges(&mut encoder, &[info], &self.0, |v| ViewInfoLabel {
            view: v.sample.view.clone(),
            snapshot: v.sample.snapshot.clone(),
        })?;
        encode_gauges(&mut encoder, VIEW_METRICS, &self.0, |v| ViewLabel {
            view: v.sample.view.clone(),
        })
    }
}

/// The records a scrape reports, as a collector: the values are the
/// records' (constant gauges), in a stable order.
#[derive(Debug)]
struct Records(Vec<StatusRecord>);

impl Collector for Records {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_gauges(&mut encoder, METRICS, &self.0, |r| JobLabel {
            job: r.job.clone(),
        })
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

    #[test]
    fn one_sample_per_view_and_metric() {
        let published: Timestamp = "2026-12-07T01:00:00Z".parse().unwrap();
        let created: Timestamp = "2026-12-07T00:00:00Z".parse().unwrap();
        let now = created.system_time() + std::time::Duration::from_secs(7200);
        let views = [
            ViewSample {
                view: "production".into(),
                snapshot: "20261207T000000Z".into(),
                snapshot_created: Some(created),
                published,
            },
            ViewSample {
                view: "staging".into(),
                snapshot: "gone".into(),
                snapshot_created: None,
                published,
            },
        ];
        let text = render_with_views(&[], &views, now);
        for line in [
            "# TYPE sstream_view_info gauge",
            "sstream_view_info{view=\"production\",snapshot=\"20261207T000000Z\"} 1.0",
            "sstream_view_info{view=\"staging\",snapshot=\"gone\"} 1.0",
            "sstream_view_snapshot_age_seconds{view=\"production\"} 7200.0",
            "sstream_view_snapshot_age_seconds{view=\"staging\"} 0.0",
            "sstream_view_snapshot_created_timestamp_seconds{view=\"production\"} 1796601600.0",
            "sstream_view_published_timestamp_seconds{view=\"staging\"} 1796605200.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
