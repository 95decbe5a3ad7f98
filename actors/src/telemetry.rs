//! Handles to the runtime's labelled metrics, looked up once per thread.
//!
//! `metrics::counter!(name, labels…)` asks the installed recorder for the series on
//! every call: it builds the key and hashes it into the recorder's registry. On the
//! hot path (every OTP send, verify, provider call and delivery attempt) that was
//! about 1 % of an HTTP worker's time. Here each thread keeps the handles it has
//! used, keyed by name and label values; every label value is a `&'static str` from
//! a finite set (outcomes, kinds, provider names), so each cache stays small.
//!
//! A handle is bound to the recorder installed when a thread first records the
//! series, so the recorder must be installed before the runtime serves (as otpd
//! does, and as the HTTP layer's request metrics already require).

use std::cell::RefCell;
use std::collections::HashMap;

type Cache<T> = RefCell<HashMap<Series, T, foldhash::fast::RandomState>>;

/// Up to two `(label, value)` pairs; unused pairs are `("", "")`.
pub(crate) type Labels = [(&'static str, &'static str); 2];

/// A series: its name and labels.
type Series = (&'static str, Labels);

thread_local! {
    static COUNTERS: Cache<metrics::Counter> = RefCell::default();
    static HISTOGRAMS: Cache<metrics::Histogram> = RefCell::default();
}

/// The recorder's labels for `labels`, without the unused pairs.
fn labels_of(labels: &Labels) -> Vec<metrics::Label> {
    labels
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|&(k, v)| metrics::Label::from_static_parts(k, v))
        .collect()
}

/// Adds `n` to the counter `name{labels}`.
pub(crate) fn count(name: &'static str, labels: Labels, n: u64) {
    COUNTERS.with(|cache| {
        cache
            .borrow_mut()
            .entry((name, labels))
            .or_insert_with(|| metrics::counter!(name, labels_of(&labels)))
            .increment(n);
    });
}

/// Records `value` in the histogram `name{labels}`.
pub(crate) fn observe(name: &'static str, labels: Labels, value: f64) {
    HISTOGRAMS.with(|cache| {
        cache
            .borrow_mut()
            .entry((name, labels))
            .or_insert_with(|| metrics::histogram!(name, labels_of(&labels)))
            .record(value);
    });
}

/// One label, the second pair unused.
pub(crate) const fn one(key: &'static str, value: &'static str) -> Labels {
    [(key, value), ("", "")]
}

/// Two labels.
pub(crate) const fn two(
    (k1, v1): (&'static str, &'static str),
    (k2, v2): (&'static str, &'static str),
) -> Labels {
    [(k1, v1), (k2, v2)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn cached_handles_count_into_the_recorder_by_label() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                count("t_total", two(("kind", "a"), ("outcome", "ok")), 1);
            }
            count("t_total", two(("kind", "a"), ("outcome", "failed")), 2);
            observe("t_seconds", one("kind", "a"), 0.5);
        });
        let mut seen = HashMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            seen.insert(
                format!("{}{{{}}}", key.key().name(), labels.join(",")),
                value,
            );
        }
        assert_eq!(
            seen.get("t_total{kind=a,outcome=ok}"),
            Some(&DebugValue::Counter(3))
        );
        assert_eq!(
            seen.get("t_total{kind=a,outcome=failed}"),
            Some(&DebugValue::Counter(2))
        );
        assert!(matches!(
            seen.get("t_seconds{kind=a}"),
            Some(DebugValue::Histogram(v)) if v.len() == 1
        ));
    }
}
