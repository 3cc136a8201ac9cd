//! One `modules:` entry: its raw form as written and its validated form. `RawModule`'s sections
//! and the `match` on the `prober:` name are generated from the prober table in `probe.rs`.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::probe::{self, ProbeSpec, prober_list};
use crate::values::{ConfigDuration, FieldError, format_duration};

/// Generates `RawModule` (one optional section per prober; fields rather than a flattened map,
/// since serde's `flatten` and `deny_unknown_fields` do not combine) and `build_spec`.
macro_rules! raw_module {
    ($($name:ident => $variant:ident, $title:literal;)*) => {
        /// A module as written in the file (blackbox's format, unknown fields rejected).
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RawModule {
            /// Which prober runs the module: one of `probe::PROBER_NAMES`.
            pub prober: String,
            /// The longest a probe may take; the scrape timeout caps it further.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub timeout: Option<ConfigDuration>,
            /// How old a result may be to answer a `/probe` request instead of a new probe (a
            /// lookout extension; without it every request probes, as in blackbox).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub cache: Option<ConfigDuration>,
            /// The DNS server that resolves this module's names instead of the system's (a
            /// lookout extension).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub dns_server: Option<probe::resolve::DnsServerSection>,
            /// Probe every address the target's name resolves to (a lookout extension).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub every_address: Option<probe::every_address::Section>,
            $(
                #[doc = concat!($title, " settings.")]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $name: Option<probe::$name::Section>,
            )*
        }

        /// Validates the section `prober:` names (its default when absent); errors are
        /// relative to the module.
        fn build_spec(raw: &RawModule, base: &Path) -> Result<ProbeSpec, FieldError> {
            match raw.prober.as_str() {
                $(
                    stringify!($name) => probe::$name::Spec::build(&section(&raw.$name), base)
                        .map(ProbeSpec::$variant)
                        .map_err(|e| e.within(stringify!($name))),
                )*
                "" => Err(FieldError::new(
                    "prober",
                    format!("prober must be set ({})", prober_list()),
                )),
                other => Err(FieldError::new(
                    "prober",
                    format!("unknown prober {other:?} (expected {})", prober_list()),
                )),
            }
        }
    };
}
probe::probers!(raw_module);

/// A section as written, or its defaults when the module has none.
fn section<T: Default + Clone>(s: &Option<T>) -> Cow<'_, T> {
    s.as_ref()
        .map_or_else(|| Cow::Owned(T::default()), Cow::Borrowed)
}

/// A validated module: what `/probe` and the scheduler use.
#[derive(Debug, Clone)]
pub struct Module {
    /// Its name (the key under `modules:`).
    pub name: String,
    /// The module timeout; `None` when not set (the scrape timeout alone applies).
    pub timeout: Option<Duration>,
    /// How old a cached result may be to answer `/probe` (`cache:`); `None`: always probe.
    pub cache: Option<Duration>,
    /// The validated probe settings.
    pub spec: Arc<ProbeSpec>,
    /// The resolver of `dns_server:`, built at load; `None`: the process's resolver.
    pub resolver: Option<probe::resolve::Resolver>,
    /// `every_address:`; `None`: one address, as blackbox.
    pub every_address: Option<probe::every_address::EveryAddress>,
    /// The module as written, for `/config` and debug output (secrets print as `<secret>`).
    pub raw: RawModule,
}

/// Validates one module; the error's path is relative to the module.
pub fn build(name: &str, raw: RawModule, base: &Path) -> Result<Module, FieldError> {
    let spec = build_spec(&raw, base)?;
    let timeout = raw.timeout.map(|d| d.0).filter(|d| !d.is_zero());
    if let (ProbeSpec::Icmp(icmp), Some(timeout)) = (&spec, timeout)
        && let Some(echoes) = icmp.echoes
        && echoes.sending_time() >= timeout
    {
        return Err(FieldError::new(
            "icmp.interval",
            format!(
                "{} echoes {} apart take {} to send, which does not fit in the module's timeout of {}",
                echoes.count,
                format_duration(echoes.interval),
                format_duration(echoes.sending_time()),
                format_duration(timeout)
            ),
        ));
    }
    let cache = raw.cache.map(|d| d.0).filter(|d| !d.is_zero());
    let resolver = match &raw.dns_server {
        Some(server) => Some(
            probe::resolve::Resolver::for_module(server, base)
                .map_err(|e| e.within("dns_server"))?,
        ),
        None => None,
    };
    let every_address = match &raw.every_address {
        Some(section) => Some(
            probe::every_address::EveryAddress::build(section, &spec)
                .map_err(|e| e.within("every_address"))?,
        ),
        None => None,
    };
    Ok(Module {
        name: name.to_owned(),
        timeout,
        cache,
        spec: Arc::new(spec),
        resolver,
        every_address,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::PROBER_NAMES;

    #[test]
    fn every_prober_in_the_table_builds_and_keeps_its_name() {
        for name in PROBER_NAMES {
            let raw: RawModule = serde_norway::from_str(&format!(
                "{{prober: {name}, dns: {{query_name: example.org}}, postgres: {{user: u}}}}"
            ))
            .unwrap();
            let m = build("m", raw, Path::new(".")).unwrap();
            assert_eq!(m.spec.prober_name(), *name);
        }
    }

    #[test]
    fn prober_errors_list_the_table() {
        let e = build("m", RawModule::default(), Path::new(".")).unwrap_err();
        assert_eq!(e.path, "prober");
        assert_eq!(
            e.message,
            "prober must be set (http, tcp, dns, icmp, grpc, postgres, mqtt, redis, unix or websocket)"
        );
    }
}
