//! The measurements of one probe: an owned, append-only list of samples.
//!
//! A prober writes into the `Report` that `probe::run` lends it, so whatever was measured before a
//! timeout or failure is kept. Exposition (`crate::metrics`) turns reports into text; nothing here
//! knows about formats.

use std::borrow::Cow;

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that can go up and down.
    Gauge,
    /// A monotonically increasing count; its name ends in `_total`.
    Counter,
    /// Observations counted into buckets (written with `set_histogram`).
    Histogram,
}

/// A metric family: a static name, help text and type.
///
/// Families are constants beside the code that measures them, with blackbox_exporter's help text.
#[derive(Debug, PartialEq, Eq)]
pub struct Family {
    /// The metric name, e.g. `probe_http_status_code`.
    pub name: &'static str,
    /// The HELP text, written verbatim.
    pub help: &'static str,
    /// Gauge or counter.
    pub kind: Kind,
}

impl Family {
    /// A gauge family.
    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Gauge,
        }
    }
}

/// Label pairs of one sample; keys are almost always static names, values owned.
pub type Labels = Vec<(Cow<'static, str>, String)>;

/// One sample of a family.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The family the sample belongs to.
    pub family: &'static Family,
    /// Its labels, in declaration order.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
}

/// One histogram series: per-bucket (not cumulative) counts by upper bound, the last `+Inf`.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// The family.
    pub family: &'static Family,
    /// Buckets as (upper bound, observations in this bucket only).
    pub buckets: Vec<(f64, u64)>,
    /// The sum of observations.
    pub sum: f64,
    /// The number of observations.
    pub count: u64,
}

/// The samples one probe produced.
#[derive(Debug, Clone, Default)]
pub struct Report {
    samples: Vec<Sample>,
    histograms: Vec<Histogram>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Report {
        Report {
            samples: Vec::with_capacity(24),
            histograms: Vec::new(),
        }
    }

    /// An empty report with room for `n` samples.
    pub fn with_capacity(n: usize) -> Report {
        Report {
            samples: Vec::with_capacity(n),
            histograms: Vec::new(),
        }
    }

    /// Gives back the room reserved for samples that never came: for a report kept for long
    /// (every scheduled target's last one), which `new`'s 24 slots would otherwise make
    /// several times its size.
    pub fn shrink_to_fit(&mut self) {
        self.samples.shrink_to_fit();
        for s in &mut self.samples {
            s.labels.shrink_to_fit();
        }
        self.histograms.shrink_to_fit();
    }

    /// Sets an unlabelled histogram.
    pub fn set_histogram(
        &mut self,
        family: &'static Family,
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    ) {
        self.histograms.retain(|h| !std::ptr::eq(h.family, family));
        self.histograms.push(Histogram {
            family,
            buckets,
            sum,
            count,
        });
    }

    /// The histograms.
    pub fn histograms(&self) -> &[Histogram] {
        &self.histograms
    }

    /// All samples, in the order they were first written.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    fn find(
        &mut self,
        family: &'static Family,
        labels: &[(&'static str, &str)],
    ) -> Option<&mut Sample> {
        self.samples.iter_mut().find(|s| {
            std::ptr::eq(s.family, family)
                && s.labels.len() == labels.len()
                && s.labels
                    .iter()
                    .zip(labels)
                    .all(|((k1, v1), (k2, v2))| k1 == k2 && v1 == v2)
        })
    }

    /// Sets one series whose label names come from the config (e.g. `probe_expect_info`).
    pub fn set_owned_labels(
        &mut self,
        family: &'static Family,
        labels: Vec<(String, String)>,
        value: f64,
    ) {
        self.samples.retain(|s| {
            !std::ptr::eq(s.family, family)
                || !s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_ref(), v.as_str()))
                    .eq(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        });
        self.samples.push(Sample {
            family,
            labels: labels
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k), v))
                .collect(),
            value,
        });
    }

    /// Takes `other`'s samples and histograms, its values replacing this report's for the same
    /// series (`every_address` builds one report from the deciding address's).
    pub fn merge(&mut self, other: Report) {
        for s in other.samples {
            let same = self
                .samples
                .iter_mut()
                .find(|m| std::ptr::eq(m.family, s.family) && m.labels == s.labels);
            match same {
                Some(m) => m.value = s.value,
                None => self.samples.push(s),
            }
        }
        for h in other.histograms {
            self.histograms
                .retain(|m| !std::ptr::eq(m.family, h.family));
            self.histograms.push(h);
        }
    }

    /// Makes an unlabelled family present with the value 0 unless it already has a value; the
    /// families blackbox registers up front show 0 when a probe fails before measuring them.
    pub fn declare(&mut self, family: &'static Family) {
        self.declare_labeled(family, &[]);
    }

    /// Like `declare`, for one labelled series (e.g. a phase).
    pub fn declare_labeled(&mut self, family: &'static Family, labels: &[(&'static str, &str)]) {
        if self.find(family, labels).is_none() {
            self.push(family, labels, 0.0);
        }
    }

    /// Sets an unlabelled family to `value`.
    pub fn set(&mut self, family: &'static Family, value: f64) {
        self.set_labeled(family, &[], value);
    }

    /// Sets one labelled series to `value`.
    pub fn set_labeled(
        &mut self,
        family: &'static Family,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        match self.find(family, labels) {
            Some(s) => s.value = value,
            None => self.push(family, labels, value),
        }
    }

    /// Adds `value` to one labelled series (creating it at 0 first): phases summed over redirects.
    pub fn add(&mut self, family: &'static Family, labels: &[(&'static str, &str)], value: f64) {
        match self.find(family, labels) {
            Some(s) => s.value += value,
            None => self.push(family, labels, value),
        }
    }

    /// The value of a series, if present.
    pub fn get(&self, family: &'static Family, labels: &[(&'static str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                std::ptr::eq(s.family, family)
                    && s.labels.len() == labels.len()
                    && s.labels
                        .iter()
                        .zip(labels)
                        .all(|((k1, v1), (k2, v2))| k1 == k2 && v1 == v2)
            })
            .map(|s| s.value)
    }

    fn push(&mut self, family: &'static Family, labels: &[(&'static str, &str)], value: f64) {
        debug_assert!(
            self.samples
                .iter()
                .filter(|s| std::ptr::eq(s.family, family))
                .all(|s| s
                    .labels
                    .iter()
                    .map(|l| l.0.as_ref())
                    .eq(labels.iter().map(|l| l.0))),
            "family {} written with two label sets",
            family.name
        );
        self.samples.push(Sample {
            family,
            labels: labels
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), (*v).to_owned()))
                .collect(),
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static F: Family = Family::gauge("f", "help");
    static P: Family = Family::gauge("p", "phases");

    #[test]
    fn declare_keeps_an_existing_value() {
        let mut r = Report::new();
        r.set(&F, 3.0);
        r.declare(&F);
        assert_eq!(r.get(&F, &[]), Some(3.0));
        assert_eq!(r.samples().len(), 1);
    }

    #[test]
    fn add_sums_per_label_set() {
        let mut r = Report::new();
        r.add(&P, &[("phase", "connect")], 1.0);
        r.add(&P, &[("phase", "connect")], 0.5);
        r.add(&P, &[("phase", "tls")], 2.0);
        assert_eq!(r.get(&P, &[("phase", "connect")]), Some(1.5));
        assert_eq!(r.get(&P, &[("phase", "tls")]), Some(2.0));
    }
}
